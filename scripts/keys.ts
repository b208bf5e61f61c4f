/**
 * @module
 * `npm run keys`: manage API keys in D1 (src/accounts/), locally (the state `npm start` serves,
 * .wrangler/state) or on the deployed database with `--remote`.
 *
 *   npm run keys -- create --name NAME [--scopes classify,jobs,images,admin] [--rpm N]
 *                          [--images-per-minute N] [--expires 30d] [--json]
 *   npm run keys -- list [--json]
 *   npm run keys -- revoke ID [--json]
 *   options: --remote (the deployed D1; needs wrangler login or CLOUDFLARE_API_TOKEN),
 *            --persist DIR (local state, default .wrangler/state)
 *
 * `create --json` prints one JSON object with the new `key` (shown only this once) and its `id`.
 * A revoked key stops working everywhere within KEY_CACHE_TTL_S (30 s; at most 60).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseCommandLine } from "../model-shards/args.ts";
import { isKeyId, newKey, parseExpiry, parseLimit, parseName, parseScopes } from "../src/accounts/keys.ts";
import { KeyStore, keyView, type SqlDatabase } from "../src/accounts/store.ts";
import { AppError } from "../src/shared/errors.ts";
import { DATABASE } from "../src/topology.ts";
import { d1Cli } from "./lib/d1-cli.ts";
import { applyLocalMigrations } from "./lib/d1-migrations.ts";
import { runWrangler } from "./lib/run-wrangler.ts";
import { writeWranglerConfigs } from "./lib/wrangler-configs.ts";

const root = resolve(import.meta.dirname, "..");
const USAGE =
  "Usage: npm run keys -- create --name NAME [--scopes classify,jobs,images,admin] [--rpm N] [--images-per-minute N] [--expires 30d] [--json] | list [--json] | revoke ID [--json]; add --remote for the deployed database";

function usage(m: string): AppError {
  return new AppError("usage", 2, `${m}. ${USAGE}`);
}

/** The database: local state (migrations applied first) or the deployed one. */
async function database(remote: boolean, persist: string, dir: string): Promise<SqlDatabase> {
  let resourceIds: Record<string, string> | undefined;
  if (remote) {
    const { stdout } = await runWrangler(["d1", "list", "--json"], { root, env: { CI: "1" } });
    const hit = (JSON.parse(stdout) as { uuid: string; name: string }[]).find(
      (d) => d.name === DATABASE.databaseName,
    );
    if (!hit)
      throw new AppError(
        "no-database",
        1,
        `The account has no D1 database ${DATABASE.databaseName}: run \`npm run deploy\` first.`,
      );
    resourceIds = { [DATABASE.binding]: hit.uuid };
  }
  const configs = await writeWranglerConfigs({ root, outDir: dir, stages: 1, resourceIds });
  const config = configs.gateway;
  if (!remote) await applyLocalMigrations(root, [config], persist);
  return d1Cli({
    root,
    databaseName: DATABASE.databaseName,
    config,
    persistTo: remote ? undefined : persist,
  });
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  const { values: v, positionals } = parseCommandLine(
    {
      args: rest,
      allowPositionals: true,
      options: {
        name: { type: "string" },
        scopes: { type: "string" },
        rpm: { type: "string" },
        "images-per-minute": { type: "string" },
        expires: { type: "string" },
        json: { type: "boolean", default: false },
        remote: { type: "boolean", default: false },
        persist: { type: "string", default: join(root, ".wrangler/state") },
      },
    },
    usage,
  );
  if (!["create", "list", "revoke"].includes(command ?? ""))
    throw usage(`unknown command ${JSON.stringify(command ?? "")}`);
  const out = (text: string, json: unknown) =>
    process.stdout.write(v.json ? `${JSON.stringify(json)}\n` : text);
  // Validate everything before touching the database (bad input changes nothing).
  const now = Date.now();
  let create: Parameters<KeyStore["create"]>[0] | null = null;
  let token = "";
  if (command === "create") {
    if (positionals.length) throw usage(`create takes no positional argument (${positionals[0]})`);
    try {
      const k = await newKey();
      token = k.token;
      create = {
        id: k.id,
        hash: k.hash,
        name: parseName(v.name),
        scopes: parseScopes(v.scopes),
        rpm: parseLimit(v.rpm, "rpm"),
        imagesPerMinute: parseLimit(v["images-per-minute"], "images-per-minute"),
        expiresAt: parseExpiry(v.expires, now),
        now,
      };
    } catch (e) {
      if (e instanceof AppError)
        throw usage(e.detail.replace(/\.$/, "").replace("images_per_minute", "--images-per-minute"));
      throw e;
    }
  }
  if (command === "revoke" && (positionals.length !== 1 || !isKeyId(positionals[0])))
    throw usage(
      positionals.length !== 1
        ? "revoke takes one key id"
        : `${JSON.stringify(positionals[0].slice(0, 40))} is not a key id (key_<16 hex digits>; see npm run keys -- list)`,
    );
  if (command === "list" && positionals.length) throw usage("list takes no positional argument");
  const dir = await mkdtemp(join(tmpdir(), "beit-edge-keys-"));
  try {
    const store = new KeyStore(await database(v.remote, resolve(v.persist), dir));
    if (create) {
      const row = await store.create(create);
      const view = keyView(row, now);
      out(
        `Created ${view.id} "${view.name}" (scopes ${view.scopes.join(", ")}${view.expires_at ? `, expires ${view.expires_at}` : ""}).\nKey (shown only this once, store it now):\n  ${token}\n`,
        { ...view, key: token },
      );
    } else if (command === "list") {
      const keys = (await store.list()).map((k) => keyView(k, now));
      out(
        keys.length === 0
          ? "No keys.\n"
          : `${keys.map((k) => `${k.id}  ${k.status.padEnd(7)}  ${k.name}  [${k.scopes.join(",")}]  rpm=${k.rpm ?? "default"} ipm=${k.images_per_minute ?? "default"}  last used ${k.last_used_at ?? "never"}`).join("\n")}\n`,
        { keys },
      );
    } else {
      const id = positionals[0];
      const row = await store.revoke(id, now);
      if (!row)
        throw new AppError(
          "key-not-found",
          1,
          `No key has the id ${id} (see npm run keys -- list). Nothing changed.`,
        );
      const view = keyView(row, now);
      out(`Revoked ${id} ("${view.name}") at ${view.revoked_at}; it stops working within 60 s.\n`, view);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  const err =
    e instanceof AppError ? e : new AppError("keys-failed", 1, e instanceof Error ? e.message : String(e));
  process.stderr.write(`error[${err.code}]: ${err.detail}\n`);
  process.exit(err.status === 2 ? 2 : 1);
});
