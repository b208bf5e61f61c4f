/**
 * @module
 * onnxruntime-node (the native CPU runtime), loaded only by the benchmarks that compare against it.
 *
 * It is an optional dependency whose install script `allowScripts` in package.json denies: the
 * script only fetches CUDA/TensorRT providers from a host outside the package registries (the CPU
 * runtime ships inside the npm package), and its failure would roll back the whole `npm install`.
 * An npm that does not know `allowScripts` (npm 10) runs the script; as the dependency is optional,
 * npm then drops the package instead of failing the install, and {@link loadOrtNode} says how to
 * get it back. Nothing outside bench/ imports it, so the type-check never needs it either.
 */
import type * as OrtCommon from "onnxruntime-common";

/** The subset of onnxruntime-node the benchmarks use: onnxruntime-common's API. */
export type OrtNode = Pick<typeof OrtCommon, "InferenceSession" | "Tensor">;
export type OrtSession = OrtCommon.InferenceSession;

/** Imports onnxruntime-node, or throws a message naming the command that installs it. */
export async function loadOrtNode(): Promise<OrtNode> {
  const name = "onnxruntime-node"; // a variable: no type-check or bundler dependency on it
  try {
    return (await import(name)) as OrtNode;
  } catch (err) {
    throw new Error(
      `onnxruntime-node could not be loaded (${(err as Error).message}). It is optional; ` +
        "install it without its CUDA download: ONNXRUNTIME_NODE_INSTALL=skip npm install",
    );
  }
}
