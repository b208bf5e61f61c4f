/**
 * @module
 * Command lines of the Node CLIs (the converter, `npm start`, `npm run deploy`, `npm run classify`):
 * node:util `parseArgs` in strict mode, its errors turned into the CLI's own usage error with one
 * wording everywhere (`unexpected argument "--x"`, `--x needs a value`). A negative number after a
 * string option is its value (`--seed -1`), which parseArgs alone calls ambiguous.
 */
import { type ParseArgsConfig, parseArgs } from "node:util";

/** What parseArgs returns for `T`. */
export type ParsedCommandLine<T extends ParseArgsConfig> = ReturnType<typeof parseArgs<T>>;

const quoted = (message: string) => /'([^']+)'/.exec(message)?.[1] ?? "";

/**
 * Parses `config.args` (strict). Every parse error becomes `usage(message)`, so the CLI keeps its
 * own error code and usage text.
 *
 * @example
 * const { values } = parseCommandLine(
 *   { args: argv, options: { out: { type: "string" } } },
 *   (m) => new AppError("invalid-arguments", 400, `${m}. Usage: ...`),
 * );
 */
export function parseCommandLine<T extends ParseArgsConfig>(
  config: T,
  usage: (message: string) => Error,
): ParsedCommandLine<T> {
  const options = config.options ?? {};
  const args = [...(config.args ?? [])];
  for (let i = 0; i + 1 < args.length; i++) {
    const name = args[i].startsWith("--") ? args[i].slice(2) : null;
    if (name && options[name]?.type === "string" && /^-\d/.test(args[i + 1]))
      args.splice(i, 2, `--${name}=${args[i + 1]}`);
  }
  try {
    return parseArgs({ ...config, args, strict: true }) as ParsedCommandLine<T>;
  } catch (e) {
    const err = e as { code?: string; message?: string };
    const message = err.message ?? String(e);
    if (err.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION" || err.code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL")
      throw usage(`unexpected argument ${JSON.stringify(quoted(message))}`);
    if (err.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
      const option = /--[A-Za-z0-9-]+/.exec(quoted(message))?.[0] ?? quoted(message);
      if (/argument missing|ambiguous/.test(message)) throw usage(`${option} needs a value`);
      throw usage(`${option} takes no value`);
    }
    throw usage(message);
  }
}
