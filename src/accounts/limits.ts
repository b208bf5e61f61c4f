/**
 * @module
 * The quota limits of a caller id outside a request (the jobs consumer charging a job's images to
 * its owner): an issued key's own limits or the defaults, the static API_KEY's defaults, none for
 * the open service.
 */
import { type AccountsVars, accountsConfigOf } from "./config.ts";
import { isKeyId } from "./keys.ts";
import { KeyStore, type SqlDatabase } from "./store.ts";

export async function limitsOf(
  db: SqlDatabase | undefined,
  owner: string,
  vars: AccountsVars,
): Promise<{ rpm: number; imagesPerMinute: number } | null> {
  const cfg = accountsConfigOf(vars);
  const defaults = { rpm: cfg.defaultRpm, imagesPerMinute: cfg.defaultImagesPerMinute };
  if (owner.startsWith("key:")) return defaults;
  if (!isKeyId(owner)) return null;
  const row = db ? await new KeyStore(db).get(owner) : null;
  return {
    rpm: row?.rpm ?? defaults.rpm,
    imagesPerMinute: row?.images_per_minute ?? defaults.imagesPerMinute,
  };
}
