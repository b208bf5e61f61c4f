/**
 * The CLIs' command-line parser: values and positionals as node:util parseArgs gives them, a
 * negative number as a string option's value, and every kind of mistake as the CLI's own usage
 * error with one wording.
 */
import { describe, expect, it } from "vitest";
import { parseCommandLine } from "./args.ts";

class Usage extends Error {}
const options = {
  seed: { type: "string" },
  out: { type: "string" },
  verbose: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;
const parse = (args: string[], allowPositionals = false) =>
  parseCommandLine({ args, options, allowPositionals }, (m) => new Usage(m));
const failure = (args: string[]) => {
  try {
    parse(args);
    return "ok";
  } catch (e) {
    expect(e).toBeInstanceOf(Usage);
    return (e as Error).message;
  }
};

describe("parseCommandLine", () => {
  it("reads --name value, --name=value, booleans, short flags and positionals", () => {
    const r = parse(["a", "--seed", "3", "--out=dir", "--verbose", "-h", "b"], true);
    expect(r.values).toEqual({ seed: "3", out: "dir", verbose: true, help: true });
    expect(r.positionals).toEqual(["a", "b"]);
    expect(parse(["--seed", "-1"]).values.seed).toBe("-1");
    expect(parse(["--out", "-"]).values.out).toBe("-");
  });

  it("turns each mistake into the CLI's usage error", () => {
    expect(failure(["--bogus"])).toBe('unexpected argument "--bogus"');
    expect(failure(["stray"])).toBe('unexpected argument "stray"');
    expect(failure(["--seed"])).toBe("--seed needs a value");
    expect(failure(["--seed", "--out", "x"])).toBe("--seed needs a value");
    expect(failure(["--verbose=yes"])).toBe("--verbose takes no value");
  });
});
