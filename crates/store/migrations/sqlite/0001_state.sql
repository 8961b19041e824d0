-- The state as writeback 0.1 kept it (SQLite `user_version` 4). IF NOT EXISTS: a state file
-- from before the migrations table already has these tables and keeps them as they are.
CREATE TABLE IF NOT EXISTS links (cloud_id TEXT PRIMARY KEY, object_guid TEXT NOT NULL, dn TEXT NOT NULL,
  updated_at TEXT NOT NULL, usn INTEGER);
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, status TEXT NOT NULL,
  started_at TEXT NOT NULL, finished_at TEXT, adds INTEGER NOT NULL DEFAULT 0,
  updates INTEGER NOT NULL DEFAULT 0, renames INTEGER NOT NULL DEFAULT 0,
  moves INTEGER NOT NULL DEFAULT 0, deletes INTEGER NOT NULL DEFAULT 0,
  member_adds INTEGER NOT NULL DEFAULT 0, member_removes INTEGER NOT NULL DEFAULT 0,
  skipped_members INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0,
  duration_ms INTEGER NOT NULL DEFAULT 0, message TEXT);
CREATE TABLE IF NOT EXISTS errors (cloud_id TEXT NOT NULL, member_id TEXT NOT NULL DEFAULT '', message TEXT NOT NULL,
  since TEXT NOT NULL, last_seen TEXT NOT NULL, run_id INTEGER NOT NULL,
  PRIMARY KEY (cloud_id, member_id, message));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS approvals (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT NOT NULL,
  group_id TEXT, up_to INTEGER NOT NULL, who TEXT NOT NULL, created_at TEXT NOT NULL,
  used_run INTEGER, used_at TEXT);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL, at TEXT NOT NULL,
  group_id TEXT NOT NULL, group_name TEXT NOT NULL, group_dn TEXT NOT NULL, op TEXT NOT NULL,
  member_id TEXT, member_name TEXT, member_dn TEXT, why TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_group ON audit (group_id);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
