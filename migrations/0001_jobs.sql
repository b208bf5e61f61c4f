-- Webhook classification jobs (issue #9). Applied by `wrangler d1 migrations apply` (npm start,
-- tests, npm run deploy). Times are Unix milliseconds. Every state change is a conditional UPDATE
-- (see src/jobs/repository.ts), so a queue message handled twice cannot produce two results.

CREATE TABLE jobs (
  id TEXT PRIMARY KEY,                      -- job_<12 hex ms time><20 hex random>: sorts by creation
  owner TEXT NOT NULL,                      -- the caller: "key:<sha256 prefix of its API key>" or "open"
  status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
  idempotency_key TEXT,                     -- Idempotency-Key header, unique per owner while the job lives
  request_hash TEXT NOT NULL,               -- sha256 over the images and parameters (same key + other body = 422)
  callback_url TEXT,
  metadata TEXT,                            -- the caller's JSON object, echoed back
  top_k INTEGER NOT NULL,
  exif_transpose INTEGER NOT NULL,
  batch INTEGER NOT NULL,                   -- 1: results is one array per image, as /v1/classify answers a batch
  image_count INTEGER NOT NULL,
  image_bytes INTEGER NOT NULL,
  uploads_deleted INTEGER NOT NULL DEFAULT 0, -- R2 UPLOADS objects uploads/<id>/<i> removed (once final)
  attempts INTEGER NOT NULL DEFAULT 0,      -- classification attempts claimed; the claim token
  lease_until INTEGER,                      -- a running job past its lease is re-enqueued by the sweeper
  results TEXT,                             -- JSON, the /v1/classify answer
  images TEXT,                              -- JSON [{width, height, format}]
  model TEXT,                               -- JSON {id, version, synthetic, precision}
  timings TEXT,                             -- JSON
  error TEXT,                               -- JSON problem details when failed (or the last retryable one)
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  expires_at INTEGER NOT NULL               -- the row (and its delivery) is deleted after this
);
CREATE UNIQUE INDEX jobs_owner_idempotency_key ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_owner_id ON jobs (owner, id);
CREATE INDEX jobs_owner_status_id ON jobs (owner, status, id);
CREATE INDEX jobs_status_updated ON jobs (status, updated_at);
CREATE INDEX jobs_expires_at ON jobs (expires_at);

-- One delivery per job with a callback_url: the final event, signed and posted until delivered,
-- gone (410) or out of attempts; redeliver starts a new generation with the same webhook_id.
CREATE TABLE deliveries (
  job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
  webhook_id TEXT NOT NULL,                 -- webhook-id header, stable across retries and redeliveries
  url TEXT NOT NULL,
  payload TEXT NOT NULL,                    -- the event body, fixed when the job became final
  state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
  generation INTEGER NOT NULL DEFAULT 0,    -- +1 per redeliver; messages of older generations are dropped
  attempts INTEGER NOT NULL DEFAULT 0,      -- attempts in this generation; the claim token
  total_attempts INTEGER NOT NULL DEFAULT 0,
  last_status INTEGER,
  last_error TEXT,
  last_attempt_at INTEGER,
  next_attempt_at INTEGER,
  lease_until INTEGER,
  delivered_at INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX deliveries_state_next_attempt ON deliveries (state, next_attempt_at);
