-- CDN image tagging (issue #10). Applied with the other migrations by `wrangler d1 migrations
-- apply` (npm start, tests, npm run deploy). Times are Unix milliseconds. One row per locator
-- (an origin URL or an R2 bucket/key): the version last seen there and its tagging outcome.

CREATE TABLE images (
  id INTEGER PRIMARY KEY,
  locator TEXT NOT NULL UNIQUE,             -- 'url:<origin URL>' or 'r2:<bucket>/<key>' (src/tagging/identity.ts)
  source TEXT NOT NULL CHECK (source IN ('origin', 'r2')),
  url TEXT,                                 -- origin URL (source 'origin')
  r2_key TEXT,                              -- object key (source 'r2')
  public_url TEXT,                          -- the URL it was first requested under through the tagging Worker
  etag TEXT,                                -- validators of the version tagged: strong ETag without quotes,
  last_modified TEXT,                       -- Last-Modified as sent,
  content_length INTEGER,                   -- and its length in bytes
  content_type TEXT,
  sha256 TEXT,                              -- of the bytes; with model_version the content-hash dedupe key
  width INTEGER,
  height INTEGER,
  format TEXT,                              -- decoded format: jpeg, png, webp, avif, gif
  model_id TEXT,
  model_version TEXT,                       -- which model made the labels (or tried to)
  status TEXT NOT NULL CHECK (status IN ('tagged', 'skipped', 'failed')),
  reason TEXT,                              -- for skipped/failed: image-too-large, not-an-image, undecodable-image, ...
  label_count INTEGER NOT NULL DEFAULT 0,
  classified INTEGER NOT NULL DEFAULT 0,    -- 1: the last processing called the model; 0: labels reused, current, or none
  tagged_at INTEGER,                        -- when the labels were stored
  updated_at INTEGER NOT NULL
);
CREATE INDEX images_sha256_model ON images (sha256, model_version) WHERE status = 'tagged';
CREATE INDEX images_url ON images (url) WHERE url IS NOT NULL;
CREATE INDEX images_public_url ON images (public_url) WHERE public_url IS NOT NULL;
CREATE INDEX images_r2_key ON images (r2_key) WHERE r2_key IS NOT NULL;

-- The stored labels: the top_k above the minimum score, one row each. Search reads
-- image_labels_search only: label = ? AND score >= ?, best score first, then image id (the cursor).
CREATE TABLE image_labels (
  image_id INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
  rank INTEGER NOT NULL,                    -- 0 = best
  label TEXT NOT NULL COLLATE NOCASE,
  class_id INTEGER NOT NULL,
  score REAL NOT NULL,
  PRIMARY KEY (image_id, rank)
);
CREATE INDEX image_labels_search ON image_labels (label, score DESC, image_id);
