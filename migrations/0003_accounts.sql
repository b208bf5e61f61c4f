-- API keys, usage, and jobs a client can stop (issue #20). Applied with the other migrations by
-- `wrangler d1 migrations apply` (npm start, tests, npm run deploy). Times are Unix milliseconds.

-- One row per issued key. The key itself is never stored: only the SHA-256 of the token
-- (bek_<16 hex>_<32 base62>); the id key_<16 hex> is the hex inside the token.
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,                      -- key_<16 hex>
  hash TEXT NOT NULL,                       -- lower-case hex SHA-256 of the whole token
  name TEXT NOT NULL,
  scopes TEXT NOT NULL,                     -- comma-separated: classify, jobs, images, admin
  rpm INTEGER,                              -- requests per minute; NULL = the DEFAULT_RPM var
  images_per_minute INTEGER,                -- images classified per minute; NULL = DEFAULT_IMAGES_PER_MINUTE
  created_at INTEGER NOT NULL,
  expires_at INTEGER,                       -- NULL = never
  revoked_at INTEGER,                       -- set once; a revoked key never works again
  last_used_at INTEGER                      -- written off the hot path, at most once a minute per isolate
);
CREATE INDEX api_keys_active ON api_keys (revoked_at, expires_at);

-- Usage per key and UTC day, added to off the hot path (waitUntil). key_id is a key id, the
-- static API_KEY's caller id (key:<sha256 prefix>), "open" (no auth) or "cdn" (tagging misses).
CREATE TABLE usage_daily (
  key_id TEXT NOT NULL,
  day TEXT NOT NULL,                        -- YYYY-MM-DD (UTC)
  requests INTEGER NOT NULL DEFAULT 0,
  images INTEGER NOT NULL DEFAULT 0,        -- images classified (classify, jobs, tagging)
  model_ms INTEGER NOT NULL DEFAULT 0,      -- the stages' session.run time, summed
  jobs INTEGER NOT NULL DEFAULT 0,          -- jobs submitted
  deliveries INTEGER NOT NULL DEFAULT 0,    -- webhook delivery attempts
  images_tagged INTEGER NOT NULL DEFAULT 0, -- images the tagging consumer stored labels for
  PRIMARY KEY (key_id, day)
);
CREATE INDEX usage_daily_day ON usage_daily (day);

-- Jobs a client can stop. jobs.status keeps its CHECK ('queued','running','succeeded','failed'):
-- SQLite cannot change a CHECK without rebuilding the table, and dropping `jobs` would cascade-delete
-- every delivery (D1 enforces foreign keys). A canceled or expired job is stored as status 'failed'
-- with `outcome` naming why; the API shows `outcome` as the status (src/jobs/model.ts).
ALTER TABLE jobs ADD COLUMN outcome TEXT CHECK (outcome IN ('canceled', 'expired'));
ALTER TABLE jobs ADD COLUMN cancel_requested_at INTEGER; -- POST /v1/jobs/{id}/cancel while running
ALTER TABLE jobs ADD COLUMN start_by INTEGER;            -- cancel_after: not started by then = expired
CREATE INDEX jobs_start_by ON jobs (start_by) WHERE start_by IS NOT NULL AND status = 'queued';
