//! `writeback state export` / `state import`: the whole state (links, watermarks and the
//! rest of `meta`, run history, errors, approvals, the audit trail) as one JSON document, so
//! that a single-host SQLite installation moves to PostgreSQL (or back) without a full
//! resync. The leader row and the instances are not moved: they describe running processes.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{Engine, Result, Store, StoreError};

/// The format's version, checked on import.
const FORMAT: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Export {
    pub format: u32,
    pub schema: i64,
    pub links: Vec<(String, String, String, String, Option<i64>)>,
    pub meta: Vec<(String, String)>,
    pub runs: Vec<Vec<serde_json::Value>>,
    pub errors: Vec<(String, String, String, String, String, i64)>,
    pub approvals: Vec<ApprovalRow>,
    pub audit: Vec<AuditRow>,
}

/// id, what, group, up_to, who, created_at, used_run, used_at
type ApprovalRow = (i64, String, Option<String>, i64, String, String, Option<i64>, Option<String>);
/// id, run, at, group id, name and DN, op, member id, name and DN, why
type AuditRow =
    (i64, i64, String, String, String, String, String, Option<String>, Option<String>, Option<String>, String);

const RUNS: &str = "SELECT id, kind, status, started_at, finished_at, adds, updates, renames, moves, deletes, \
    member_adds, member_removes, skipped_members, errors, duration_ms, message, host, epoch FROM runs ORDER BY id";
const RUNS_IN: &str = "INSERT INTO runs (id, kind, status, started_at, finished_at, adds, updates, renames, moves, \
    deletes, member_adds, member_removes, skipped_members, errors, duration_ms, message, host, epoch) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)";
/// Which columns of `RUNS` are integers (the others are text).
const RUN_INTEGER: [bool; 18] =
    [true, false, false, false, false, true, true, true, true, true, true, true, true, true, true, false, false, true];

impl Export {
    /// What it holds, in words.
    pub fn describe(&self) -> String {
        format!(
            "{} links, {} runs, {} errors, {} approvals, {} audit entries, watermarks {}",
            self.links.len(),
            self.runs.len(),
            self.errors.len(),
            self.approvals.len(),
            self.audit.len(),
            if self.meta.iter().any(|(k, _)| k == "watermarks") { "included" } else { "none" }
        )
    }
}

impl Store {
    /// The whole state as of one moment (one transaction; PostgreSQL's repeatable read).
    pub async fn export(&self) -> Result<Export> {
        let mut tx = self.pool.begin().await?;
        if self.engine == Engine::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await?;
        }
        let p = &mut *tx;
        let mut out = Export { format: FORMAT, schema: crate::schema::SCHEMA_VERSION, ..Export::default() };
        for r in sqlx::query("SELECT cloud_id, object_guid, dn, updated_at, usn FROM links ORDER BY cloud_id")
            .fetch_all(&mut *p)
            .await?
        {
            out.links.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?));
        }
        for r in sqlx::query("SELECT key, value FROM meta ORDER BY key").fetch_all(&mut *p).await? {
            out.meta.push((r.try_get(0)?, r.try_get(1)?));
        }
        for r in sqlx::query(RUNS).fetch_all(&mut *p).await? {
            let mut row = Vec::with_capacity(RUN_INTEGER.len());
            for (i, int) in RUN_INTEGER.iter().enumerate() {
                row.push(match int {
                    true => r.try_get::<Option<i64>, _>(i)?.map_or(serde_json::Value::Null, Into::into),
                    false => r.try_get::<Option<String>, _>(i)?.map_or(serde_json::Value::Null, Into::into),
                });
            }
            out.runs.push(row);
        }
        for r in sqlx::query("SELECT cloud_id, member_id, message, since, last_seen, run_id FROM errors ORDER BY 1, 2")
            .fetch_all(&mut *p)
            .await?
        {
            out.errors.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?));
        }
        for r in sqlx::query(
            "SELECT id, what, group_id, up_to, who, created_at, used_run, used_at FROM approvals ORDER BY id",
        )
        .fetch_all(&mut *p)
        .await?
        {
            out.approvals.push((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
                r.try_get(6)?,
                r.try_get(7)?,
            ));
        }
        for r in sqlx::query(
            "SELECT id, run_id, at, group_id, group_name, group_dn, op, member_id, member_name, member_dn, why \
             FROM audit ORDER BY id",
        )
        .fetch_all(&mut *p)
        .await?
        {
            out.audit.push((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
                r.try_get(6)?,
                r.try_get(7)?,
                r.try_get(8)?,
                r.try_get(9)?,
                r.try_get(10)?,
            ));
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Loads an export into this state, which must be empty (no links and no runs): all or
    /// nothing, in one transaction.
    pub async fn import(&self, data: &Export) -> Result<()> {
        if data.format != FORMAT {
            return Err(StoreError::Import(format!(
                "unknown export format {} (this build reads {FORMAT})",
                data.format
            )));
        }
        if data.schema > crate::schema::SCHEMA_VERSION {
            return Err(StoreError::TooNew(data.schema, crate::schema::SCHEMA_VERSION));
        }
        let (links, runs): (i64, i64) = (
            sqlx::query_scalar("SELECT count(*) FROM links").fetch_one(&self.pool).await?,
            sqlx::query_scalar("SELECT count(*) FROM runs").fetch_one(&self.pool).await?,
        );
        if links > 0 || runs > 0 {
            return Err(StoreError::Import(format!(
                "the state at {} is not empty ({links} links, {runs} runs): import only into a new state",
                self.at
            )));
        }
        let mut tx = self.begin().await?;
        for (id, guid, dn, at, usn) in &data.links {
            sqlx::query("INSERT INTO links (cloud_id, object_guid, dn, updated_at, usn) VALUES ($1, $2, $3, $4, $5)")
                .bind(id)
                .bind(guid)
                .bind(dn)
                .bind(at)
                .bind(usn)
                .execute(&mut *tx)
                .await?;
        }
        for (k, v) in &data.meta {
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await?;
        }
        for row in &data.runs {
            if row.len() != RUN_INTEGER.len() {
                return Err(StoreError::Import(format!("a run has {} columns, not {}", row.len(), RUN_INTEGER.len())));
            }
            let mut q = sqlx::query(RUNS_IN);
            for (v, int) in row.iter().zip(RUN_INTEGER) {
                q = match int {
                    true => q.bind(v.as_i64()),
                    false => q.bind(v.as_str().map(str::to_string)),
                };
            }
            q.execute(&mut *tx).await?;
        }
        for (id, member, message, since, last, run) in &data.errors {
            sqlx::query(
                "INSERT INTO errors (cloud_id, member_id, message, since, last_seen, run_id)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(member)
            .bind(message)
            .bind(since)
            .bind(last)
            .bind(run)
            .execute(&mut *tx)
            .await?;
        }
        for (id, what, group, up_to, who, at, used_run, used_at) in &data.approvals {
            sqlx::query(
                "INSERT INTO approvals (id, what, group_id, up_to, who, created_at, used_run, used_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id)
            .bind(what)
            .bind(group)
            .bind(up_to)
            .bind(who)
            .bind(at)
            .bind(used_run)
            .bind(used_at)
            .execute(&mut *tx)
            .await?;
        }
        for (id, run, at, gid, gname, gdn, op, mid, mname, mdn, why) in &data.audit {
            sqlx::query(
                "INSERT INTO audit (id, run_id, at, group_id, group_name, group_dn, op, member_id, member_name,
                   member_dn, why) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(id)
            .bind(run)
            .bind(at)
            .bind(gid)
            .bind(gname)
            .bind(gdn)
            .bind(op)
            .bind(mid)
            .bind(mname)
            .bind(mdn)
            .bind(why)
            .execute(&mut *tx)
            .await?;
        }
        // The epochs of the imported runs stay behind the lead's: the next leader's is higher.
        let max_epoch = data.runs.iter().filter_map(|r| r.get(17).and_then(serde_json::Value::as_i64)).max();
        if let Some(e) = max_epoch {
            sqlx::query("UPDATE leader SET epoch = $1 WHERE epoch < $1").bind(e).execute(&mut *tx).await?;
        }
        if self.engine == Engine::Postgres {
            // Ids were given: the identity columns continue after them.
            for table in [SEQ_RUNS, SEQ_APPROVALS, SEQ_AUDIT] {
                sqlx::query(table).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

const SEQ_RUNS: &str =
    "SELECT setval(pg_get_serial_sequence('runs', 'id'), (SELECT COALESCE(max(id), 0) + 1 FROM runs), false)";
const SEQ_APPROVALS: &str =
    "SELECT setval(pg_get_serial_sequence('approvals', 'id'), (SELECT COALESCE(max(id), 0) + 1 FROM approvals), false)";
const SEQ_AUDIT: &str =
    "SELECT setval(pg_get_serial_sequence('audit', 'id'), (SELECT COALESCE(max(id), 0) + 1 FROM audit), false)";
