/**
 * @module
 * `npm run topology [-- --check]`: writes the committed wrangler.toml (the gateway template) from
 * src/topology.ts; `--check` only says whether it is up to date (exit 1 when it drifted).
 */
import { resolve } from "node:path";
import { parseCommandLine } from "../model-shards/args.ts";
import { AppError } from "../src/shared/errors.ts";
import { TEMPLATE_FILE, writeGatewayTemplate } from "./lib/wrangler-configs.ts";

async function main(argv: string[]): Promise<number> {
  const { values } = parseCommandLine(
    { args: argv, options: { check: { type: "boolean", default: false } } },
    (m) => new AppError("usage", 2, `${m}. Usage: npm run topology [-- --check]`),
  );
  const fresh = await writeGatewayTemplate(resolve(import.meta.dirname, ".."), values.check);
  if (fresh) console.log(`${TEMPLATE_FILE} is up to date with src/topology.ts`);
  else if (values.check) {
    console.error(`${TEMPLATE_FILE} differs from src/topology.ts: run \`npm run topology\` and commit it`);
    return 1;
  } else console.log(`wrote ${TEMPLATE_FILE} from src/topology.ts`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    console.error(e instanceof AppError ? `error[${e.code}]: ${e.detail}` : e);
    process.exitCode = e instanceof AppError ? e.status : 1;
  },
);
