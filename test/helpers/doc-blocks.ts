/**
 * @module
 * The fenced code blocks of a Markdown file, for the tests that keep the docs honest
 * (test/doc-examples.test.ts runs every `sh` block; test/docs.test.ts checks links and sizes).
 *
 * The convention: a block whose info string is `sh` is an example that runs as printed; the line
 * right before its opening fence may say `<!-- doc-test: skip (reason) -->` to keep it from running
 * (the reason is listed). Output samples use `console` or `text` blocks.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";

export interface DocBlock {
  /** Path relative to the project root. */
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  info: string;
  code: string;
  /** The reason given by a `<!-- doc-test: skip (reason) -->` line right before the fence. */
  skip?: string;
}

export const ROOT = resolve(import.meta.dirname, "../..");

/** README.md, then docs/*.md in name order (docs/operations.md included whenever it exists). */
export function docFiles(root = ROOT): string[] {
  const docs = readdirSync(join(root, "docs"))
    .filter((f) => f.endsWith(".md"))
    .sort()
    .map((f) => join(root, "docs", f));
  return [join(root, "README.md"), ...docs];
}

/** Every fenced block of `path`, in document order. */
export function docBlocks(path: string, root = ROOT): DocBlock[] {
  const lines = readFileSync(path, "utf8").split("\n");
  const blocks: DocBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(```+|~~~+)\s*([\w-]*)/.exec(lines[i]);
    if (!open) continue;
    const fence = open[1];
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !lines[i].startsWith(fence); i++) body.push(lines[i]);
    const marker = /^<!--\s*doc-test:\s*skip\s*\((.+)\)\s*-->\s*$/.exec(lines[start - 1] ?? "");
    blocks.push({
      file: relative(root, path),
      line: start + 1,
      info: open[2],
      code: body.join("\n"),
      ...(marker ? { skip: marker[1] } : {}),
    });
  }
  return blocks;
}
