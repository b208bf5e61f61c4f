/**
 * @module
 * `npm run topology [-- --check]`: writes the committed wrangler.toml (the gateway template) from
 * src/topology.ts; `--check` only says whether it is up to date (exit 1 when it drifted).
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { TEMPLATE_FILE, writeGatewayTemplate } from "./lib/wrangler-configs.ts";

const { values } = parseArgs({ options: { check: { type: "boolean", default: false } } });
const root = resolve(import.meta.dirname, "..");
const fresh = await writeGatewayTemplate(root, values.check);
if (fresh) console.log(`${TEMPLATE_FILE} is up to date with src/topology.ts`);
else if (values.check) {
  console.error(`${TEMPLATE_FILE} differs from src/topology.ts: run \`npm run topology\` and commit it`);
  process.exitCode = 1;
} else console.log(`wrote ${TEMPLATE_FILE} from src/topology.ts`);
