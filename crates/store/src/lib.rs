//! writeback-store: what writeback remembers between runs, in SQLite (one host) or
//! PostgreSQL (several hosts, one active: see `lead`), through one interface and one set of
//! queries (sqlx's `Any` driver; each engine has its own migrations).
//!
//! Architecture invariant: the state is a cache of facts that can be rebuilt. The ownership
//! marker in AD is the truth; losing the state never causes duplicates (the planner matches
//! by marker), it only loses history.

mod approvals;
mod audit;
mod export;
mod instances;
pub mod lead;
mod schema;
mod target;

use std::path::Path;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use writeback_core::{CloudId, Dn, Link, ObjectError, ObjectGuid, RunKind, RunStatus, State, Summary};

pub use approvals::{approved, Approval, Approve};
pub use audit::{AuditEntry, AuditOp, AuditQuery};
pub use export::Export;
pub use instances::{Instance, Leader, Role};
pub use target::{PgTarget, Target, TargetError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the state database {at} cannot be used: {message}. If it is damaged, \
        move it away: writeback rebuilds its links from the markers in AD (run \
        history is lost)"
    )]
    Open { at: String, message: String },
    #[error(
        "the state database {at} cannot be reached: {message}. Check that PostgreSQL runs, the \
        [state] url, the password and the CA ([state] ca_file)"
    )]
    Unreachable { at: String, message: String },
    #[error(
        "the state database was written by a newer writeback (schema {0}, this \
        build knows {1}); upgrade writeback"
    )]
    TooNew(i64, i64),
    #[error(
        "this instance is no longer the active one (leader epoch {mine}, the state's is {current}): \
        it recorded nothing more and stopped writing"
    )]
    NotLeader { mine: i64, current: i64 },
    #[error("state database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("state import: {0}")]
    Import(String),
    #[error(
        "the state at {at} belongs to another deployment ({theirs}); this configuration is for \
        {ours} (the tenant and the AD domain written to). Every instance sharing a state must have \
        the same [cloud] tenant_id and [ad] target_ou domain: give this one a state of its own"
    )]
    OtherDeployment { at: String, theirs: String, ours: String },
}

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
    /// The host that ran it, and its leader epoch (none for runs before 0.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
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

/// Which engine holds the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The leader epoch a writer holds: with PostgreSQL, every transaction it writes first reads the
/// leader row's epoch (`FOR KEY SHARE`) and fails if it moved; a takeover moves the epoch only
/// once it holds the row `FOR UPDATE`, so no transaction of an old leader that read the old
/// epoch can commit after the new one is in place (`lead`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub deployment: String,
    pub epoch: i64,
}

pub struct Store {
    pool: AnyPool,
    engine: Engine,
    /// Where, for messages (never a password).
    at: String,
    fence: Option<Fence>,
    /// Host and epoch recorded with each run this store starts.
    runner: Option<(String, i64)>,
}

/// What the state records of past runs, as the CLI and the status page show it.
#[derive(Debug, Default)]
pub struct Recorded {
    pub runs: Vec<RunRecord>,
    pub errors: Vec<ErrorRecord>,
}

/// The last `limit` runs and the current errors of the state at `target`, read without
/// writing anything; nothing recorded yet when there is no state.
pub async fn recorded(target: &Target, limit: usize) -> Result<Recorded> {
    match Store::open_read_only(target).await? {
        Some(s) => Ok(Recorded { runs: s.runs(limit).await?, errors: s.errors().await? }),
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

/// This host's name, as the state records it (runs, instances, the lead).
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// How this process names its PostgreSQL sessions (the leader row keeps it: a takeover ends
/// them all): the pid and the time it started, unique among the hosts, under PostgreSQL's 63
/// bytes.
pub fn application_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        format!("writeback:{}:{:x}", std::process::id(), nanos % (1 << 48))
    })
}

/// Now, as the state records times: UTC, milliseconds, `2026-12-03T10:00:00.000Z` (text that
/// sorts as time in both engines).
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// `now()` moved back by `by`.
pub(crate) fn ago(by: std::time::Duration) -> String {
    let t = std::time::SystemTime::now().checked_sub(by).unwrap_or(std::time::UNIX_EPOCH);
    humantime::format_rfc3339_millis(t).to_string()
}

fn count(n: i64) -> usize {
    n.max(0) as usize
}

fn run_record(r: &AnyRow) -> Result<RunRecord> {
    let (kind, status): (String, String) = (r.try_get(1)?, r.try_get(2)?);
    let unknown =
        |w: &str| StoreError::Open { at: "(runs)".into(), message: format!("unknown run kind or status '{w}'") };
    let mut values = [0usize; 9];
    for (i, v) in values.iter_mut().enumerate() {
        *v = count(r.try_get::<i64, _>(7 + i)?);
    }
    Ok(RunRecord {
        run_id: r.try_get(0)?,
        kind: RunKind::parse(&kind).ok_or_else(|| unknown(&kind))?,
        status: RunStatus::parse(&status).ok_or_else(|| unknown(&status))?,
        started_at: r.try_get(3)?,
        finished_at: r.try_get(4)?,
        counts: Summary::from_columns(values),
        duration_ms: r.try_get(5)?,
        message: r.try_get(6)?,
        host: r.try_get(16)?,
        epoch: r.try_get(17)?,
    })
}

impl Store {
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Where the state is, for messages.
    pub fn at(&self) -> &str {
        &self.at
    }

    /// From now on every write checks that `fence` is still the leader's epoch (PostgreSQL).
    pub fn fenced(&mut self, fence: Fence, host: &str) {
        self.runner = Some((host.to_string(), fence.epoch));
        self.fence = Some(fence);
    }

    /// A transaction for writing: with a fence on PostgreSQL, it first reads the leader row's
    /// epoch `FOR KEY SHARE` and fails if it moved. That lock does not stop the heartbeat (an
    /// update of other columns) or other writers, but a takeover's `FOR UPDATE` waits for it:
    /// a transaction that read the old epoch commits before the new epoch is in place, or not
    /// at all (`lead`). SQLite has one writer per file lock.
    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        let mut tx = self.pool.begin().await?;
        if let (Some(f), Engine::Postgres) = (&self.fence, self.engine) {
            let current: Option<i64> =
                sqlx::query_scalar("SELECT epoch FROM leader WHERE deployment = $1 FOR KEY SHARE")
                    .bind(&f.deployment)
                    .fetch_optional(&mut *tx)
                    .await?;
            let current = current.unwrap_or(0);
            if current != f.epoch {
                return Err(StoreError::NotLeader { mine: f.epoch, current });
            }
        }
        Ok(tx)
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1").bind(key).fetch_optional(&self.pool).await?)
    }

    /// A value kept as JSON under `key`; `None` when absent or no longer readable (a newer
    /// shape): what is kept there can always be rebuilt.
    pub async fn load_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        Ok(self.meta(key).await?.and_then(|text| serde_json::from_str(&text).ok()))
    }

    pub async fn save_json<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let text = serde_json::to_string(value)
            .map_err(|e| StoreError::Open { at: format!("(meta {key})"), message: e.to_string() })?;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(text)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Where the next delta cycle starts, if a full sync has run.
    pub async fn watermarks(&self) -> Result<Option<Watermarks>> {
        self.load_json("watermarks").await
    }

    /// Stored only once a cycle's changes are applied or recorded.
    pub async fn save_watermarks(&self, w: &Watermarks) -> Result<()> {
        self.save_json("watermarks", w).await
    }

    /// Records the `uSNChanged` our own writes left on groups, so that only changes made
    /// by someone else count as drift.
    pub async fn save_usns(&self, usns: &[(CloudId, u64)]) -> Result<()> {
        let mut tx = self.begin().await?;
        for (id, usn) in usns {
            sqlx::query("UPDATE links SET usn = $2 WHERE cloud_id = $1")
                .bind(id.as_str())
                .bind(*usn as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The `uSNChanged` writeback last left on each linked group.
    pub async fn usns(&self) -> Result<std::collections::HashMap<CloudId, u64>> {
        let rows = sqlx::query("SELECT cloud_id, usn FROM links WHERE usn IS NOT NULL").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((CloudId::new(r.try_get::<String, _>(0)?), r.try_get::<i64, _>(1)?.max(0) as u64)))
            .collect()
    }

    /// Cloud ids with a current error: a delta cycle looks at them again.
    pub async fn error_ids(&self) -> Result<Vec<CloudId>> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT cloud_id FROM errors ORDER BY cloud_id").fetch_all(&self.pool).await?;
        Ok(ids.into_iter().map(CloudId::new).collect())
    }

    /// After a delta cycle: the errors of the groups it looked at are replaced; others stay.
    pub async fn merge_errors(&self, run_id: i64, looked_at: &[CloudId], errors: &[ObjectError]) -> Result<()> {
        let mut tx = self.begin().await?;
        upsert_errors(&mut tx, run_id, errors).await?;
        for id in looked_at {
            sqlx::query("DELETE FROM errors WHERE cloud_id = $1 AND run_id != $2")
                .bind(id.as_str())
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What the planner needs.
    pub async fn state(&self) -> Result<State> {
        let rows = sqlx::query("SELECT cloud_id, object_guid, dn FROM links").fetch_all(&self.pool).await?;
        let links = rows
            .iter()
            .map(|r| {
                let guid = ObjectGuid::new(r.try_get::<String, _>(1)?);
                Ok((CloudId::new(r.try_get::<String, _>(0)?), Link { guid, dn: Dn::new(r.try_get::<String, _>(2)?) }))
            })
            .collect::<Result<_>>()?;
        let former_ous = self.load_json("managed_ous").await?.unwrap_or_default();
        let takeover_holds = self.load_json("takeover_holds").await?.unwrap_or_default();
        Ok(State { links, former_ous, takeover_holds })
    }

    /// The groups taken over from AD whose removals wait for an approval (see
    /// `State::takeover_holds`).
    pub async fn save_takeover_holds(&self, holds: &std::collections::BTreeSet<CloudId>) -> Result<()> {
        self.save_json("takeover_holds", holds).await
    }

    /// The OUs a cycle managed that must stay managed (see `State::former_ous`).
    pub async fn save_managed_ous(&self, ous: &[String]) -> Result<()> {
        self.save_json("managed_ous", &ous).await
    }

    pub async fn start_run(&self, kind: RunKind) -> Result<i64> {
        let (host, epoch) = self.runner.clone().map_or((None, None), |(h, e)| (Some(h), Some(e)));
        let mut tx = self.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (kind, status, started_at, host, epoch) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(kind.as_str())
        .bind(RunStatus::Running.as_str())
        .bind(now())
        .bind(host)
        .bind(epoch)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn finish_run(
        &self,
        id: i64,
        kind: RunKind,
        status: RunStatus,
        s: &Summary,
        duration_ms: i64,
        message: Option<&str>,
    ) -> Result<()> {
        // The counts are bound in the order of `Summary::columns` (a test holds them together).
        let mut q = sqlx::query(FINISH_RUN)
            .bind(id)
            .bind(kind.as_str())
            .bind(status.as_str())
            .bind(now())
            .bind(duration_ms)
            .bind(message.map(str::to_string));
        for (_, n) in s.columns() {
            q = q.bind(n as i64);
        }
        // Fenced too: an instance that lost the lead records nothing more, not even the end of
        // its run (the next leader closes it: `close_interrupted`).
        let mut tx = self.begin().await?;
        q.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Runs of earlier epochs still marked running (their instance was killed, stopped or lost
    /// the lead before it could record their end) are marked failed, their end unknown.
    /// Returns how many.
    pub async fn close_interrupted(&self) -> Result<u64> {
        let Some((_, epoch)) = &self.runner else { return Ok(0) };
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE runs SET status = $1, message = $2 WHERE status = $3 AND (epoch IS NULL OR epoch < $4)",
        )
        .bind(RunStatus::Failed.as_str())
        .bind("interrupted: its instance was killed, stopped or lost the lead before the run ended (end unknown)")
        .bind(RunStatus::Running.as_str())
        .bind(*epoch)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// Records which AD object stands for which cloud group; forgets deleted ones. Only the
    /// links that changed are written.
    pub async fn save_links<'a>(
        &self,
        links: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
        forget: &[CloudId],
    ) -> Result<()> {
        let known = self.state().await?.links;
        let mut tx = self.begin().await?;
        let stamp = now();
        for (id, guid, dn) in links {
            if known.get(id).is_some_and(|l| l.guid.as_str() == guid && l.dn.as_str() == dn) {
                continue;
            }
            sqlx::query(
                "INSERT INTO links (cloud_id, object_guid, dn, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (cloud_id) DO UPDATE SET object_guid = excluded.object_guid, dn = excluded.dn,
                   updated_at = excluded.updated_at",
            )
            .bind(id)
            .bind(guid)
            .bind(dn)
            .bind(&stamp)
            .execute(&mut *tx)
            .await?;
        }
        for id in forget {
            sqlx::query("DELETE FROM links WHERE cloud_id = $1").bind(id.as_str()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Makes `errors` the current set, keeping `since` for errors that persist.
    pub async fn replace_errors(&self, run_id: i64, errors: &[ObjectError]) -> Result<()> {
        let mut tx = self.begin().await?;
        upsert_errors(&mut tx, run_id, errors).await?;
        sqlx::query("DELETE FROM errors WHERE run_id != $1").bind(run_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>> {
        let rows = sqlx::query(LAST_RUNS).bind(limit.min(i64::MAX as usize) as i64).fetch_all(&self.pool).await?;
        rows.iter().map(run_record).collect()
    }

    pub async fn errors(&self) -> Result<Vec<ErrorRecord>> {
        let rows = sqlx::query(
            "SELECT cloud_id, member_id, message, since, last_seen FROM errors ORDER BY cloud_id, member_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let member: String = r.try_get(1)?;
                Ok(ErrorRecord {
                    cloud_id: r.try_get(0)?,
                    member_id: (!member.is_empty()).then_some(member),
                    message: r.try_get(2)?,
                    since: r.try_get(3)?,
                    last_seen: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// The last full run that did its work (a new leader goes on with delta cycles after it).
    pub async fn last_full_run(&self) -> Result<Option<RunRecord>> {
        let rows = sqlx::query(LAST_FULL_RUNS).fetch_all(&self.pool).await?;
        for r in &rows {
            let run = run_record(r)?;
            if run.status.done() {
                return Ok(Some(run));
            }
        }
        Ok(None)
    }

    pub async fn link_count(&self) -> Result<usize> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM links").fetch_one(&self.pool).await?;
        Ok(count(n))
    }

    /// Closes the connections (a SQLite file is then free to be moved or removed). A
    /// PostgreSQL pool is kept for the process's next `open`.
    pub async fn close(self) {
        if self.engine == Engine::Sqlite {
            self.pool.close().await;
        }
    }
}

const LAST_FULL_RUNS: &str = "SELECT id, kind, status, started_at, finished_at, duration_ms, message, adds, updates, \
    renames, moves, deletes, member_adds, member_removes, skipped_members, errors, host, epoch \
    FROM runs WHERE kind = 'full' ORDER BY id DESC LIMIT 20";

const FINISH_RUN: &str = "UPDATE runs SET kind = $2, status = $3, finished_at = $4, duration_ms = $5, message = $6, \
    adds = $7, updates = $8, renames = $9, moves = $10, deletes = $11, member_adds = $12, member_removes = $13, \
    skipped_members = $14, errors = $15 WHERE id = $1";

const LAST_RUNS: &str = "SELECT id, kind, status, started_at, finished_at, duration_ms, message, adds, updates, \
    renames, moves, deletes, member_adds, member_removes, skipped_members, errors, host, epoch \
    FROM runs ORDER BY id DESC LIMIT $1";

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
async fn upsert_errors(tx: &mut Transaction<'static, Any>, run_id: i64, errors: &[ObjectError]) -> Result<()> {
    let stamp = now();
    for e in errors {
        sqlx::query(
            "INSERT INTO errors (cloud_id, member_id, message, since, last_seen, run_id) VALUES ($1, $2, $3, $4, $4, $5)
             ON CONFLICT (cloud_id, member_id, message) DO UPDATE SET last_seen = excluded.last_seen,
               run_id = excluded.run_id",
        )
        .bind(&e.cloud_id)
        .bind(e.member_id.clone().unwrap_or_default())
        .bind(&e.message)
        .bind(&stamp)
        .bind(run_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
