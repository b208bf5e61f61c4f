/**
 * @module
 * A TOML writer for the shapes wrangler configs use: strings, numbers, booleans, arrays of those
 * (inline), tables (`[vars]`, `[triggers]`) and arrays of tables (`[[services]]`,
 * `[[queues.consumers]]`). Scalars and inline arrays of a table come before its sub-tables, as TOML
 * requires. Used to write the committed wrangler.toml template (scripts/topology.ts).
 */

type Scalar = string | number | boolean;

const isTable = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
const isTableArray = (v: unknown): v is Record<string, unknown>[] =>
  Array.isArray(v) && v.length > 0 && v.every(isTable);

function key(k: string): string {
  return /^[A-Za-z0-9_-]+$/.test(k) ? k : basicString(k);
}

/** A TOML basic string: JSON's escapes are valid TOML; DEL must be escaped as well. */
function basicString(s: string): string {
  return JSON.stringify(s).replace(/\u007f/g, "\\u007F");
}

function scalar(v: unknown, path: string): string {
  if (typeof v === "string") return basicString(v);
  if (typeof v === "boolean") return String(v);
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new Error(`toml: ${path} is not a finite number`);
    return String(v);
  }
  if (Array.isArray(v)) return `[${v.map((x, i) => scalar(x, `${path}[${i}]`)).join(", ")}]`;
  throw new Error(`toml: ${path} has a value TOML cannot hold here (${typeof v})`);
}

function table(obj: Record<string, unknown>, path: string[], out: string[]): void {
  const subs: [string, unknown][] = [];
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined) continue;
    if (isTable(v) || isTableArray(v)) subs.push([k, v]);
    else out.push(`${key(k)} = ${scalar(v as Scalar | Scalar[], [...path, k].join("."))}`);
  }
  for (const [k, v] of subs) {
    const p = [...path, k];
    const header = p.map(key).join(".");
    if (isTableArray(v))
      for (const item of v) {
        out.push("", `[[${header}]]`);
        table(item, p, out);
      }
    else {
      out.push("", `[${header}]`);
      table(v as Record<string, unknown>, p, out);
    }
  }
}

/** The TOML text of `doc` (a JSON-shaped object), ending in a newline. */
export function toToml(doc: Record<string, unknown>): string {
  const out: string[] = [];
  table(doc, [], out);
  return `${out.join("\n")}\n`;
}
