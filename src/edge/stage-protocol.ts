/**
 * @module
 * The wire between the gateway and a stage Worker (service binding, so no network hop):
 *
 * - `POST /run`  body: the stage input as little-endian float32 bytes; headers
 *   `x-model-version` (the version the gateway pinned for this request) and `x-stage-index`.
 *   200 body: the stage output as float32 bytes; headers `x-stage-ms` (session.run time),
 *   `x-load-ms` (time spent loading the shard for this call, 0 when warm), `x-shard-origin`.
 *   Errors: application/problem+json with the AppError's status.
 * - `POST /warm` same headers, no body: loads the shard and session; 200 JSON {@link WarmReport}.
 *   `x-stage-prime: 0` asks the load not to prime the session with a run on zeros (a
 *   classification's cold start: its own first run comes next); without it the load primes. The
 *   stage honours it only under STAGE_PRIME=on-request (the default, "always", primes every load).
 * - `GET /status`: 200 JSON {@link StageStatus} (no loading).
 */

export const HEADER_VERSION = "x-model-version";
export const HEADER_STAGE = "x-stage-index";
export const HEADER_STAGE_MS = "x-stage-ms";
export const HEADER_LOAD_MS = "x-load-ms";
export const HEADER_ORIGIN = "x-shard-origin";
export const HEADER_PRIME = "x-stage-prime";

/** Host used in URLs handed to service bindings (the host is not routed anywhere). */
export const STAGE_ORIGIN = "https://stage.internal";

export interface WarmReport {
  stage: number;
  version: string;
  /** ms this call spent loading (0 when the session was already resident). */
  loadMs: number;
  /** Where the shard bytes came from on the load, or "memory" when already resident. */
  origin: "memory" | "cache" | "r2";
  wasmHeapBytes: number;
}

/**
 * Where a stage load's time went, measured inside the stage isolate with Date.now() (which only
 * advances across I/O in production, so these are meaningful locally).
 */
export interface LoadPhases {
  origin: "cache" | "r2";
  /** Manifest read and parse (0 when the isolate had it). */
  manifestMs: number;
  /** Graph + weights bodies read (Cache API or R2; with an R2 read, also the Cache API write). */
  fetchMs: number;
  /** sha256 and size checks of both files. */
  verifyMs: number;
  /** onnxruntime-web session create (on the isolate's first load, also ORT's wasm instantiation). */
  createMs: number;
  /** The priming run on zeros (0 when the load did not prime, under STAGE_PRIME=on-request). */
  primeMs: number;
  /** Whether this load ran the priming run (see STAGE_PRIME in src/topology.ts). */
  primed: boolean;
  totalMs: number;
}

export interface StageStatus {
  /** Index of the resident session's stage, or null when nothing is loaded. */
  stage: number | null;
  version: string | null;
  warm: boolean;
  /** Size of the isolate's wasm linear memory (it never shrinks); 0 before ORT starts. */
  wasmHeapBytes: number;
  /** JS heap in bytes when the runtime exposes it (workerd does not), else null. */
  jsHeapBytes: number | null;
  /** Largest wasm heap seen by this isolate. */
  peakWasmHeapBytes: number;
  /** The resident session's load breakdown, or null when nothing is loaded. */
  lastLoad?: LoadPhases | null;
}
