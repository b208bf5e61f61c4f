/**
 * The docs' shape (issue #21): README.md a front door under 12 KB that reaches every page of docs/,
 * bench/README.md under 25 KB, every relative link resolving, every var and secret of the topology
 * documented in docs/configuration.md with its default, no skip marker without a reason, and no
 * example naming an image file that is not in the repository.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { WORKERS } from "../src/topology.ts";
import { docBlocks, docFiles, ROOT } from "./helpers/doc-blocks.ts";

const read = (p: string) => readFileSync(join(ROOT, p), "utf8");

describe("docs", () => {
  it("keeps README.md under 12 KB and bench/README.md under 25 KB", () => {
    expect(statSync(join(ROOT, "README.md")).size).toBeLessThan(12 * 1024);
    expect(statSync(join(ROOT, "bench/README.md")).size).toBeLessThan(25 * 1024);
  });

  it("links every page of docs/ from README.md, operations.md included", () => {
    const readme = read("README.md");
    for (const f of docFiles().slice(1)) expect(readme).toContain(`](${relative(ROOT, f)})`);
    for (const page of [
      "api",
      "jobs",
      "tagging",
      "deploy",
      "configuration",
      "model",
      "architecture",
      "performance",
      "operations",
    ])
      expect(readme).toContain(`](docs/${page}.md)`);
  });

  it("has no relative link to a file that does not exist (operations.md may come from another branch)", () => {
    const broken: string[] = [];
    for (const file of [...docFiles(), join(ROOT, "bench/README.md"), join(ROOT, "samples/README.md")]) {
      const text = readFileSync(file, "utf8");
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1].split("#")[0];
        if (!target || /^[a-z]+:/.test(target)) continue;
        const abs = join(dirname(file), target);
        if (!existsSync(abs) && !abs.endsWith("docs/operations.md"))
          broken.push(`${relative(ROOT, file)}: ${m[1]}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it("documents every var and secret of src/topology.ts with its default in docs/configuration.md", () => {
    const config = read("docs/configuration.md");
    const missing: string[] = [];
    for (const w of WORKERS) {
      for (const [name, spec] of Object.entries(w.vars ?? {}))
        if (!config.includes(`| \`${name}\` | \`${spec.default}\` |`))
          missing.push(`${name}=${spec.default}`);
      for (const s of w.secrets ?? []) if (!config.includes(`| \`${s}\` |`)) missing.push(s);
    }
    expect(missing).toEqual([]);
  });

  it("names only files that exist in its examples, and gives every skip a reason", () => {
    const bad: string[] = [];
    for (const file of docFiles())
      for (const b of docBlocks(file)) {
        if (b.skip !== undefined && b.skip.trim().length < 5)
          bad.push(`${b.file}:${b.line} skip without a reason`);
        if (b.info !== "sh") continue;
        for (const m of b.code.matchAll(/@([\w./-]+\.(?:jpe?g|png|webp|gif|avif))/g))
          if (!existsSync(join(ROOT, m[1]))) bad.push(`${b.file}:${b.line} names ${m[1]}`);
      }
    expect(bad).toEqual([]);
  });
});
