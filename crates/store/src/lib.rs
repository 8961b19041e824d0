//! writeback-store: what writeback remembers between runs, in SQLite.
//!
//! Architecture invariant: the state is a cache of facts that can be rebuilt. The ownership
//! marker in AD is the truth; losing this file never causes duplicates (the planner matches
//! by marker), it only loses history.

mod approvals;
mod audit;

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use writeback_core::{CloudId, Dn, Link, ObjectError, ObjectGuid, RunKind, RunStatus, State, Summary};

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 4;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the state database {path} cannot be used: {message}. If it is damaged, \
        move it away: writeback rebuilds its links from the markers in AD (run \
        history is lost)"
    )]
    Open { path: String, message: String },
    #[error(
        "the state database was written by a newer writeback (schema {0}, this \
        build knows {SCHEMA_VERSION}); upgrade writeback"
    )]
    TooNew(i64),
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
}

pub use approvals::{approved, Approval, Approve};
pub use audit::{AuditEntry, AuditOp, AuditQuery};

type Result<T> = std::result::Result<T, StoreError>;

/// One run, as `status`/`history` and `sync --json` show it.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    pub run_id: i64,
    pub kind: RunKind,
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    #[serde(flatten)]
    pub counts: Summary,
    pub duration_ms: i64,
    pub message: Option<String>,
}

/// A current per-object error.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorRecord {
    pub cloud_id: String,
    pub member_id: Option<String>,
    pub message: String,
    pub since: String,
    pub last_seen: String,
}

pub struct Store {
    conn: Connection,
}

/// What the state records of past runs, as the CLI and the status page show it.
#[derive(Debug, Default)]
pub struct Recorded {
    pub runs: Vec<RunRecord>,
    pub errors: Vec<ErrorRecord>,
}

/// The last `limit` runs and the current errors of the state at `path`, read without writing
/// anything; nothing recorded yet when there is no state.
pub fn recorded(path: &Path, limit: usize) -> Result<Recorded> {
    match Store::open_read_only(path)? {
        Some(s) => Ok(Recorded { runs: s.runs(limit)?, errors: s.errors()? }),
        None => Ok(Recorded::default()),
    }
}

/// Where the next delta cycle starts: the Graph delta links and the DC's USN.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Watermarks {
    pub groups_link: String,
    pub users_link: String,
    /// Unix seconds when the links were taken (Graph forgets them after 7 days).
    pub taken_at: u64,
    /// `highestCommittedUSN` of `dc` when the cycle started, or, once its writes are read
    /// back, when it ended: AD changes after it are the next delta cycle's.
    pub ad_usn: u64,
    pub dc: String,
    /// The planning settings the last cycle ran with; a change means a full cycle.
    #[serde(default)]
    pub settings: String,
    /// Owned groups someone else changed (or deleted) while the last cycle ran, before
    /// `ad_usn`: the next delta cycle looks at them.
    #[serde(default)]
    pub recheck: Vec<CloudId>,
    /// Groups a delta cycle could not settle (Graph's reads lag its delta: not found yet, a
    /// removal not confirmed yet, members older than the delta said): looked at again by the
    /// next delta cycles, a bounded number of times. A full cycle starts with none.
    #[serde(default)]
    pub pending: std::collections::BTreeMap<CloudId, Pending>,
}

/// A group a delta cycle looks at again (see `Watermarks::pending`). Each reason to look again
/// counts on its own: one kind of evidence never stands in for another.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    /// Cycles it has been put off so far, for any reason (bounded).
    pub attempts: u32,
    /// Graph's delta reported it removed (with any reason, or none).
    #[serde(default)]
    pub removal_reported: bool,
    /// Cycles on which Graph did not find it and neither did the recycle bin.
    #[serde(default)]
    pub missing_seen: u32,
    /// Cycles on which Graph did not find it but the recycle bin did.
    #[serde(default)]
    pub soft_seen: u32,
    /// Cycles on which it was found although the round reported it removed.
    #[serde(default)]
    pub unsure_seen: u32,
    /// Cycles on which its members read older than the round said.
    #[serde(default)]
    pub stale_seen: u32,
    /// Members the delta said were added / removed, to tell a stale read on the next look.
    #[serde(default)]
    pub added: Vec<CloudId>,
    #[serde(default)]
    pub gone: Vec<CloudId>,
}

pub(crate) const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ','now')";

impl Store {
    /// Opens (creating if needed) and migrates the state database.
    pub fn open(path: &Path) -> Result<Store> {
        let open_err =
            |e: rusqlite::Error| StoreError::Open { path: path.display().to_string(), message: e.to_string() };
        private_file(path)
            .map_err(|e| StoreError::Open { path: path.display().to_string(), message: e.to_string() })?;
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(open_err)?;
        let mut store = Store { conn };
        store.migrate().map_err(|e| match e {
            StoreError::Sql(e) => open_err(e),
            other => other,
        })?;
        Ok(store)
    }

    /// Opens an existing database without writing anything (for `plan`); `None` if absent.
    pub fn open_read_only(path: &Path) -> Result<Option<Store>> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError::Open { path: path.display().to_string(), message: e.to_string() })?;
        let store = Store { conn };
        let version: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| StoreError::Open { path: path.display().to_string(), message: e.to_string() })?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew(version));
        }
        Ok(if version == SCHEMA_VERSION { Some(store) } else { None })
    }

    fn migrate(&mut self) -> Result<()> {
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew(version));
        }
        if version < 1 {
            let tx = self.conn.transaction()?;
            tx.execute_batch(
                "CREATE TABLE links (cloud_id TEXT PRIMARY KEY, object_guid TEXT NOT NULL, dn TEXT NOT NULL,
                   updated_at TEXT NOT NULL);
                 CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, status TEXT NOT NULL,
                   started_at TEXT NOT NULL, finished_at TEXT, adds INTEGER NOT NULL DEFAULT 0,
                   updates INTEGER NOT NULL DEFAULT 0, renames INTEGER NOT NULL DEFAULT 0,
                   moves INTEGER NOT NULL DEFAULT 0, deletes INTEGER NOT NULL DEFAULT 0,
                   member_adds INTEGER NOT NULL DEFAULT 0, member_removes INTEGER NOT NULL DEFAULT 0,
                   skipped_members INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0,
                   duration_ms INTEGER NOT NULL DEFAULT 0, message TEXT);
                 CREATE TABLE errors (cloud_id TEXT NOT NULL, member_id TEXT NOT NULL DEFAULT '', message TEXT NOT NULL,
                   since TEXT NOT NULL, last_seen TEXT NOT NULL, run_id INTEGER NOT NULL,
                   PRIMARY KEY (cloud_id, member_id, message));
                 PRAGMA user_version = 1;",
            )?;
            tx.commit()?;
        }
        if version < 2 {
            let tx = self.conn.transaction()?;
            tx.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 ALTER TABLE links ADD COLUMN usn INTEGER;
                 PRAGMA user_version = 2;",
            )?;
            tx.commit()?;
        }
        if version < 3 {
            let tx = self.conn.transaction()?;
            tx.execute_batch(
                "CREATE TABLE approvals (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT NOT NULL,
                   group_id TEXT, up_to INTEGER NOT NULL, who TEXT NOT NULL, created_at TEXT NOT NULL,
                   used_run INTEGER, used_at TEXT);
                 PRAGMA user_version = 3;",
            )?;
            tx.commit()?;
        }
        if version < 4 {
            let tx = self.conn.transaction()?;
            tx.execute_batch(
                "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL, at TEXT NOT NULL,
                   group_id TEXT NOT NULL, group_name TEXT NOT NULL, group_dn TEXT NOT NULL, op TEXT NOT NULL,
                   member_id TEXT, member_name TEXT, member_dn TEXT, why TEXT NOT NULL);
                 CREATE INDEX audit_group ON audit (group_id);
                 CREATE INDEX audit_at ON audit (at);
                 PRAGMA user_version = 4;",
            )?;
            tx.commit()?;
        }
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0)).optional()?)
    }

    /// A value kept as JSON under `key`; `None` when absent or no longer readable (a newer
    /// shape): what is kept there can always be rebuilt.
    pub fn load_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        Ok(self.meta(key)?.and_then(|text| serde_json::from_str(&text).ok()))
    }

    pub fn save_json<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let text = serde_json::to_string(value)
            .map_err(|e| StoreError::Open { path: format!("(meta {key})"), message: e.to_string() })?;
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, text],
        )?;
        Ok(())
    }

    /// Where the next delta cycle starts, if a full sync has run.
    pub fn watermarks(&self) -> Result<Option<Watermarks>> {
        self.load_json("watermarks")
    }

    /// Stored only once a cycle's changes are applied or recorded.
    pub fn save_watermarks(&self, w: &Watermarks) -> Result<()> {
        self.save_json("watermarks", w)
    }

    /// Records the `uSNChanged` our own writes left on groups, so that only changes made
    /// by someone else count as drift.
    pub fn save_usns(&mut self, usns: &[(CloudId, u64)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut up = tx.prepare("UPDATE links SET usn = ?2 WHERE cloud_id = ?1")?;
            for (id, usn) in usns {
                up.execute(params![id.as_str(), *usn as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The `uSNChanged` writeback last left on each linked group.
    pub fn usns(&self) -> Result<std::collections::HashMap<CloudId, u64>> {
        let mut stmt = self.conn.prepare("SELECT cloud_id, usn FROM links WHERE usn IS NOT NULL")?;
        let rows =
            stmt.query_map([], |r| Ok((CloudId::new(r.get::<_, String>(0)?), r.get::<_, i64>(1)?.max(0) as u64)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Cloud ids with a current error: a delta cycle looks at them again.
    pub fn error_ids(&self) -> Result<Vec<CloudId>> {
        let mut stmt = self.conn.prepare("SELECT DISTINCT cloud_id FROM errors ORDER BY cloud_id")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0).map(CloudId::new))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// After a delta cycle: the errors of the groups it looked at are replaced; others stay.
    pub fn merge_errors(&mut self, run_id: i64, looked_at: &[CloudId], errors: &[ObjectError]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            upsert_errors(&tx, run_id, errors)?;
            let mut del = tx.prepare("DELETE FROM errors WHERE cloud_id = ?1 AND run_id != ?2")?;
            for id in looked_at {
                del.execute(params![id.as_str(), run_id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// What the planner needs.
    pub fn state(&self) -> Result<State> {
        let mut stmt = self.conn.prepare("SELECT cloud_id, object_guid, dn FROM links")?;
        let links = stmt
            .query_map([], |r| {
                let guid = ObjectGuid::new(r.get::<_, String>(1)?);
                Ok((CloudId::new(r.get::<_, String>(0)?), Link { guid, dn: Dn::new(r.get::<_, String>(2)?) }))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let former_ous = self.load_json("managed_ous")?.unwrap_or_default();
        let takeover_holds = self.load_json("takeover_holds")?.unwrap_or_default();
        Ok(State { links, former_ous, takeover_holds })
    }

    /// The groups taken over from AD whose removals wait for an approval (see
    /// `State::takeover_holds`).
    pub fn save_takeover_holds(&self, holds: &std::collections::BTreeSet<CloudId>) -> Result<()> {
        self.save_json("takeover_holds", holds)
    }

    /// The OUs a cycle managed that must stay managed (see `State::former_ous`).
    pub fn save_managed_ous(&self, ous: &[String]) -> Result<()> {
        self.save_json("managed_ous", &ous)
    }

    pub fn start_run(&self, kind: RunKind) -> Result<i64> {
        self.conn.execute(
            &format!("INSERT INTO runs (kind, status, started_at) VALUES (?1, ?2, {NOW})"),
            params![kind.as_str(), RunStatus::Running.as_str()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(
        &self,
        id: i64,
        kind: RunKind,
        status: RunStatus,
        s: &Summary,
        duration_ms: i64,
        message: Option<&str>,
    ) -> Result<()> {
        // The counts' columns are the summary's own names (`Summary::columns`).
        let counts: Vec<String> =
            s.columns().iter().enumerate().map(|(i, (name, _))| format!("{name}=?{}", i + 6)).collect();
        let sql = format!(
            "UPDATE runs SET kind=?2, status=?3, finished_at={NOW}, duration_ms=?4, message=?5, {} WHERE id=?1",
            counts.join(", ")
        );
        let mut values: Vec<rusqlite::types::Value> = vec![
            id.into(),
            kind.as_str().to_string().into(),
            status.as_str().to_string().into(),
            duration_ms.into(),
            message.map(str::to_string).into(),
        ];
        values.extend(s.columns().iter().map(|(_, n)| rusqlite::types::Value::from(*n as i64)));
        self.conn.execute(&sql, rusqlite::params_from_iter(values))?;
        Ok(())
    }

    /// Records which AD object stands for which cloud group; forgets deleted ones.
    pub fn save_links<'a>(
        &mut self,
        links: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
        forget: &[CloudId],
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut up = tx.prepare(&format!(
                "INSERT INTO links (cloud_id, object_guid, dn, updated_at) VALUES (?1, ?2, ?3, {NOW})
                 ON CONFLICT(cloud_id) DO UPDATE SET object_guid=excluded.object_guid, dn=excluded.dn,
                   updated_at=excluded.updated_at"
            ))?;
            for (id, guid, dn) in links {
                up.execute(params![id, guid, dn])?;
            }
            let mut del = tx.prepare("DELETE FROM links WHERE cloud_id = ?1")?;
            for id in forget {
                del.execute(params![id.as_str()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Makes `errors` the current set, keeping `since` for errors that persist.
    pub fn replace_errors(&mut self, run_id: i64, errors: &[ObjectError]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            upsert_errors(&tx, run_id, errors)?;
            tx.execute("DELETE FROM errors WHERE run_id != ?1", params![run_id])?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn runs(&self, limit: usize) -> Result<Vec<RunRecord>> {
        let counts: Vec<&str> = Summary::default().columns().iter().map(|(name, _)| *name).collect();
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id, kind, status, started_at, finished_at, duration_ms, message, \
                {} FROM runs ORDER BY id DESC LIMIT ?1",
            counts.join(", ")
        ))?;
        let rows = stmt.query_map(params![limit as i64], |r| {
            let word = |i: usize| -> rusqlite::Result<String> { r.get(i) };
            let unknown = |i: usize, w: String| {
                rusqlite::Error::FromSqlConversionFailure(
                    i,
                    rusqlite::types::Type::Text,
                    format!("unknown run kind or status '{w}'").into(),
                )
            };
            let (kind, status) = (word(1)?, word(2)?);
            let mut values = [0usize; 9];
            for (i, v) in values.iter_mut().enumerate() {
                *v = r.get::<_, i64>(7 + i)?.max(0) as usize;
            }
            Ok(RunRecord {
                run_id: r.get(0)?,
                kind: RunKind::parse(&kind).ok_or_else(|| unknown(1, kind))?,
                status: RunStatus::parse(&status).ok_or_else(|| unknown(2, status))?,
                started_at: r.get(3)?,
                finished_at: r.get(4)?,
                counts: Summary::from_columns(values),
                duration_ms: r.get(5)?,
                message: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn errors(&self) -> Result<Vec<ErrorRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT cloud_id, member_id, message, since, last_seen FROM errors ORDER BY cloud_id, member_id",
        )?;
        let rows = stmt.query_map([], |r| {
            let member: String = r.get(1)?;
            Ok(ErrorRecord {
                cloud_id: r.get(0)?,
                member_id: (!member.is_empty()).then_some(member),
                message: r.get(2)?,
                since: r.get(3)?,
                last_seen: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn link_count(&self) -> Result<usize> {
        Ok(self.conn.query_row("SELECT count(*) FROM links", [], |r| r.get::<_, i64>(0)).optional()?.unwrap_or(0)
            as usize)
    }
}

/// Creates `path` readable and writable by its owner only (mode 0600), or makes an existing
/// file so: the state names every group and member. SQLite creates its journal and WAL files
/// with the database file's mode, so they are private too.
pub fn private_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)?;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        to_directory_owner(path)?;
    }
    Ok(())
}

/// A file root made in a directory that belongs to another user (the package's
/// `/var/lib/writeback`, the `writeback` user's) is given to that user: an administrator's
/// `writeback sync` as root must not leave a state or lock file the service cannot open.
/// (SQLite gives its journal the database file's owner itself when it runs as root.)
#[cfg(unix)]
fn to_directory_owner(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::metadata(path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = std::fs::metadata(dir)?;
    if file.uid() == 0 && dir.uid() != 0 {
        std::os::unix::fs::chown(path, Some(dir.uid()), Some(dir.gid()))?;
    }
    Ok(())
}

/// Records errors as seen in `run_id`; an error seen before keeps its `since`.
fn upsert_errors(tx: &rusqlite::Transaction, run_id: i64, errors: &[ObjectError]) -> Result<()> {
    let mut up = tx.prepare(&format!(
        "INSERT INTO errors (cloud_id, member_id, message, since, last_seen, run_id)
         VALUES (?1, ?2, ?3, {NOW}, {NOW}, ?4)
         ON CONFLICT(cloud_id, member_id, message) DO UPDATE SET last_seen=excluded.last_seen, run_id=excluded.run_id"
    ))?;
    for e in errors {
        up.execute(params![e.cloud_id, e.member_id.clone().unwrap_or_default(), e.message, run_id])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("writeback-store-{}-{name}.db", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn runs_links_and_errors_round_trip() {
        let path = temp("rt");
        let mut s = Store::open(&path).expect("open");
        let run = s.start_run(RunKind::Full).expect("run");
        s.save_links([("a", "guid-a", "CN=a"), ("b", "guid-b", "CN=b")], &[]).expect("links");
        s.save_links([("a", "guid-a2", "CN=a2")], &[CloudId::new("b")]).expect("links");
        assert_eq!(s.state().expect("state").links.get("a").map(|l| l.guid.as_str()), Some("guid-a2"));
        assert_eq!(s.link_count().expect("count"), 1);
        let e = |m: &str| ObjectError { cloud_id: "a".into(), member_id: None, message: m.into() };
        s.replace_errors(run, &[e("one"), e("two")]).expect("errors");
        let since = s.errors().expect("errors")[0].since.clone();
        let run2 = s.start_run(RunKind::Full).expect("run");
        s.replace_errors(run2, &[e("one")]).expect("errors");
        let now = s.errors().expect("errors");
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].since, since, "a persisting error keeps its first sighting");
        let summary = Summary { adds: 3, errors: 1, ..Summary::default() };
        s.finish_run(run2, RunKind::Full, RunStatus::CompletedWithErrors, &summary, 12, None).expect("finish");
        let runs = s.runs(10).expect("runs");
        assert_eq!((runs[0].run_id, runs[0].counts.adds, runs[0].status), (run2, 3, RunStatus::CompletedWithErrors));
        assert_eq!(runs[1].status, RunStatus::Running);
        assert!(s.watermarks().expect("wm").is_none());
        let w = Watermarks {
            groups_link: "g".into(),
            users_link: "u".into(),
            taken_at: 1,
            ad_usn: 42,
            dc: "dc1".into(),
            settings: String::new(),
            recheck: vec!["a".into()],
            pending: Default::default(),
        };
        s.save_watermarks(&w).expect("save");
        assert_eq!(s.watermarks().expect("wm").map(|w| w.ad_usn), Some(42));
        let other = ObjectError { cloud_id: "b".into(), member_id: None, message: "b broke".into() };
        let run3 = s.start_run(RunKind::Delta).expect("run");
        s.merge_errors(run3, &[CloudId::new("b")], &[other]).expect("merge");
        assert_eq!(
            s.error_ids().expect("ids"),
            vec!["a".to_string(), "b".to_string()],
            "errors of groups not looked at stay"
        );
        s.merge_errors(run3 + 1, &[CloudId::new("a")], &[]).expect("merge");
        assert_eq!(s.error_ids().expect("ids"), vec!["b".to_string()]);
        drop(s);
        assert!(Store::open_read_only(&path).expect("ro").is_some());
        let _ = std::fs::remove_file(&path);
    }

    #[cfg(unix)]
    #[test]
    fn the_database_and_its_journal_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp("mode");
        std::fs::write(&path, b"").expect("create");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut s = Store::open(&path).expect("open");
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600, "an existing database is made private");
        let tx = s.conn.transaction().expect("tx");
        tx.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')", []).expect("write");
        let journal =
            path.with_file_name(format!("{}-journal", path.file_name().and_then(|n| n.to_str()).unwrap_or("")));
        assert_eq!(mode(&journal), 0o600, "the journal SQLite creates takes the database's mode");
        tx.commit().expect("commit");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_damaged_file_is_a_clear_error() {
        let path = temp("bad");
        std::fs::write(&path, b"this is not a database, just some bytes that are long enough to look like a header..")
            .expect("write");
        let Err(err) = Store::open(&path) else { panic!("a damaged file must not open") };
        let err = err.to_string();
        assert!(err.contains("move it away"), "{err}");
        let _ = std::fs::remove_file(&path);
    }
}
