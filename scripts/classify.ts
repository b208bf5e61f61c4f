/**
 * @module
 * `npm run classify -- --model DIR IMAGE... [--top K] [--dump-pixels FILE] [--no-exif-transpose]`
 *
 * Decodes and preprocesses each image with the same code the gateway Worker runs (src/image), runs the
 * model from a local shard directory (model-shards/runner.ts) and prints JSON: `[{"label","score"}]`
 * for one image, an array of those for several. `--dump-pixels` writes the single image's pixel_values
 * as raw little-endian float32 [1, 3, H, W], to diff against Pillow + BeitImageProcessor.
 */

import { readFile, writeFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";
import { parseCommandLine } from "../model-shards/args.ts";
import { loadLocalModel } from "../model-shards/runner.ts";
import { initNodeCodecs } from "../src/image/codecs-node.ts";
import { imageToPixelValues } from "../src/image/index.ts";
import { AppError, isAppError } from "../src/shared/errors.ts";

const USAGE = `usage: npm run classify -- --model DIR IMAGE... [--top K] [--dump-pixels FILE] [--no-exif-transpose]

  --model DIR           shard directory made by \`npm run model\` (holds manifest.json)
  --top K               how many labels to print per image (default 5)
  --dump-pixels FILE    write pixel_values of the single IMAGE as raw little-endian float32 [1,3,H,W]
  --no-exif-transpose   do not apply the EXIF orientation (as Image.open + processor in the model card)`;

/** Where the CLI writes; tests pass their own. */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

const usage = (detail: string): AppError => new AppError("usage", 2, `${detail}\n${USAGE}`);

/**
 * Runs the CLI with `argv` (without node and script) and returns the exit code.
 *
 * @example
 * process.exitCode = await main(["--model", "model-shards/out/tiny", "cat.jpeg"]);
 */
export async function main(argv: string[], io: CliIo = defaultIo): Promise<number> {
  try {
    const { values, positionals } = parseCli(argv);
    if (values.help) {
      io.out(USAGE);
      return 0;
    }
    if (!values.model) throw usage("--model DIR is required.");
    if (positionals.length === 0) throw usage("Give at least one IMAGE file.");
    const top = values.top === undefined ? 5 : Number(values.top);
    if (!Number.isInteger(top) || top < 1)
      throw usage(`--top must be a positive integer, got "${values.top}".`);
    const dump = values["dump-pixels"];
    if (dump && positionals.length !== 1) throw usage("--dump-pixels works with exactly one IMAGE.");

    await initNodeCodecs();
    const model = await loadLocalModel(values.model);
    try {
      const results = [];
      for (const file of positionals) {
        const bytes = await readFile(file).catch((e: NodeJS.ErrnoException) => {
          throw new AppError("file-not-found", 2, `Cannot read image ${file}: ${e.code ?? e.message}.`);
        });
        const px = await imageToPixelValues(new Uint8Array(bytes), model.manifest.preprocess, {
          exifTranspose: !values["no-exif-transpose"],
        });
        if (dump) await writeFile(dump, littleEndianBytes(px.pixels));
        const preds = await model.classify(px.pixels, Math.min(top, model.labels.length));
        results.push(preds.map((p) => ({ label: p.label, score: p.score })));
      }
      io.out(JSON.stringify(results.length === 1 ? results[0] : results, null, 2));
    } finally {
      await model.release();
    }
    return 0;
  } catch (e) {
    if (isAppError(e)) {
      io.err(`error[${e.code}]: ${e.detail}`);
      return e.code === "usage" ? 2 : 1;
    }
    const msg = e instanceof Error ? e.message : String(e);
    io.err(`error[${(e as { code?: string }).code ?? "internal"}]: ${msg}`);
    return 1;
  }
}

function parseCli(argv: string[]) {
  return parseCommandLine(
    {
      args: argv,
      allowPositionals: true,
      options: {
        model: { type: "string" },
        top: { type: "string" },
        "dump-pixels": { type: "string" },
        "no-exif-transpose": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    },
    (m) => usage(`${m}.`),
  );
}

function littleEndianBytes(a: Float32Array): Uint8Array {
  const out = new Uint8Array(a.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < a.length; i++) view.setFloat32(i * 4, a[i], true);
  return out;
}

const defaultIo: CliIo = {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
};

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
