-- Who ran each run, the leader's epoch, and the instances that have the state open.
ALTER TABLE runs ADD COLUMN host TEXT;
ALTER TABLE runs ADD COLUMN epoch INTEGER;
CREATE TABLE leader (deployment TEXT PRIMARY KEY, epoch INTEGER NOT NULL, host TEXT NOT NULL,
  pid INTEGER NOT NULL, backend_pid INTEGER, address TEXT, since TEXT NOT NULL, heartbeat TEXT NOT NULL,
  session TEXT, stale_ms INTEGER);
CREATE TABLE instances (id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, role TEXT NOT NULL,
  address TEXT, started_at TEXT NOT NULL, last_seen TEXT NOT NULL);
