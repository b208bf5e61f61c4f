/**
 * @module
 * Hugging Face hub download (placeholder until the resumable downloader lands).
 */
import { AppError } from "../../src/shared/errors.ts";

export interface DownloadProgress {
  file: string;
  received: number;
  total: number | null;
}

export interface HubOptions {
  revision?: string;
  files?: string[];
  endpoint?: string;
  token?: string;
  cacheDir?: string;
  onProgress?: (p: DownloadProgress) => void;
}

/** Downloads a hub snapshot; returns its directory (named by the commit). */
export async function downloadFromHub(repoId: string, _opts: HubOptions = {}): Promise<string> {
  throw new AppError(
    "hub-unreachable",
    503,
    `hub download of ${repoId} is not implemented yet; pass a local directory.`,
  );
}
