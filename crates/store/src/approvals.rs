//! Approvals: what an administrator let the next cycle do past a threshold
//! (`writeback approve`), and what stopped the last run. Both live in the state database, so
//! an approval reaches a running daemon without touching its lock.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use writeback_core::{Approved, CloudId, Stopped, Threshold};

use crate::{Result, Store};

/// What one approval lets the next cycle do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "what", rename_all = "kebab-case")]
pub enum Approve {
    /// Go past a run-wide threshold, up to this count.
    Past { threshold: Threshold, up_to: usize },
    /// Make this group's held member removals, up to this count.
    Removals { group: CloudId, up_to: usize },
}

impl Approve {
    fn columns(&self) -> (&'static str, Option<&str>, usize) {
        match self {
            Approve::Past { threshold: Threshold::Deletes, up_to } => ("deletes", None, *up_to),
            Approve::Past { threshold: Threshold::MemberRemovals, up_to } => ("member-removals", None, *up_to),
            Approve::Past { threshold: Threshold::Creates, up_to } => ("creates", None, *up_to),
            Approve::Removals { group, up_to } => ("removals", Some(group.as_str()), *up_to),
        }
    }

    fn from_columns(what: &str, group: Option<String>, up_to: usize) -> Option<Approve> {
        let past = |threshold| Some(Approve::Past { threshold, up_to });
        match what {
            "deletes" => past(Threshold::Deletes),
            "member-removals" => past(Threshold::MemberRemovals),
            "creates" => past(Threshold::Creates),
            "removals" => group.map(|g| Approve::Removals { group: CloudId::new(g), up_to }),
            _ => None,
        }
    }

    /// In words: "up to 12 group deletes".
    pub fn describe(&self) -> String {
        match self {
            Approve::Past { threshold: Threshold::Deletes, up_to } => format!("up to {up_to} group deletes"),
            Approve::Past { threshold: Threshold::MemberRemovals, up_to } => {
                format!("up to {up_to} member removals in the run")
            }
            Approve::Past { threshold: Threshold::Creates, up_to } => format!("up to {up_to} group creations"),
            Approve::Removals { group, up_to } => format!("up to {up_to} member removals from group {group}"),
        }
    }
}

/// One approval: who gave it, when, and the run that used it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub id: i64,
    #[serde(flatten)]
    pub approve: Approve,
    pub who: String,
    pub created_at: String,
    pub used_run: Option<i64>,
    pub used_at: Option<String>,
}

/// How long an approval waits for a cycle to use it.
pub const APPROVAL_HOURS: u32 = 24;

/// What the open approvals let a run do (the latest of each kind counts).
pub fn approved(approvals: &[Approval]) -> Approved {
    let mut out = Approved::default();
    for a in approvals {
        match &a.approve {
            Approve::Past { threshold: Threshold::Deletes, up_to } => out.deletes = Some(*up_to),
            Approve::Past { threshold: Threshold::MemberRemovals, up_to } => out.member_removals = Some(*up_to),
            Approve::Past { threshold: Threshold::Creates, up_to } => out.creates = Some(*up_to),
            Approve::Removals { group, up_to } => {
                out.removals.insert(group.clone(), *up_to);
            }
        }
    }
    out
}

fn approval(r: &AnyRow) -> Result<Option<Approval>> {
    let (what, group, up_to): (String, Option<String>, i64) = (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
    Ok(Approve::from_columns(&what, group, up_to.max(0) as usize).map(|approve| Approval {
        id: r.try_get(0).unwrap_or_default(),
        approve,
        who: r.try_get(4).unwrap_or_default(),
        created_at: r.try_get(5).unwrap_or_default(),
        used_run: r.try_get(6).unwrap_or_default(),
        used_at: r.try_get(7).unwrap_or_default(),
    }))
}

impl Store {
    /// Records an approval for the next cycle; returns its id.
    pub async fn approve(&self, approve: &Approve, who: &str) -> Result<i64> {
        let (what, group, up_to) = approve.columns();
        let mut tx = self.begin().await?;
        let id = sqlx::query_scalar(
            "INSERT INTO approvals (what, group_id, up_to, who, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(what)
        .bind(group)
        .bind(up_to as i64)
        .bind(who)
        .bind(crate::now())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Approvals no run has used yet, oldest first; one made over a day ago has lapsed (an
    /// approval is for the stop an administrator looked at, not for one next month).
    pub async fn open_approvals(&self) -> Result<Vec<Approval>> {
        let lapse = crate::ago(std::time::Duration::from_secs(u64::from(APPROVAL_HOURS) * 3600));
        let rows = sqlx::query(
            "SELECT id, what, group_id, up_to, who, created_at, used_run, used_at FROM approvals
             WHERE used_run IS NULL AND created_at >= $1 ORDER BY id",
        )
        .bind(lapse)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().filter_map(|r| approval(r).transpose()).collect()
    }

    /// The latest approvals, used or not, newest first.
    pub async fn recent_approvals(&self, limit: usize) -> Result<Vec<Approval>> {
        let rows = sqlx::query(
            "SELECT id, what, group_id, up_to, who, created_at, used_run, used_at FROM approvals
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().filter_map(|r| approval(r).transpose()).collect()
    }

    /// Marks approvals used by `run_id`: they are gone for the cycles after it.
    pub async fn use_approvals(&self, ids: &[i64], run_id: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        let stamp = crate::now();
        for id in ids {
            sqlx::query("UPDATE approvals SET used_run = $2, used_at = $3 WHERE id = $1 AND used_run IS NULL")
                .bind(id)
                .bind(run_id)
                .bind(&stamp)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What stopped the last run (nothing once a run goes through).
    pub async fn stopped(&self) -> Result<Stopped> {
        Ok(self.load_json("stopped").await?.unwrap_or_default())
    }

    pub async fn save_stopped(&self, stopped: &Stopped) -> Result<()> {
        self.save_json("stopped", stopped).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_approval_is_for_the_next_cycle_only() {
        let dir = std::env::temp_dir().join(format!("wb-approvals-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("state.db");
        let _ = std::fs::remove_file(&path);
        let s = Store::open(&crate::Target::Sqlite(path.clone())).await.expect("open");
        let g = CloudId::new("3A5C3221-C465-48C0-95B8-E9305786A271");
        let a = s
            .approve(&Approve::Past { threshold: Threshold::Deletes, up_to: 12 }, "alice (uid 1000)")
            .await
            .expect("a");
        s.approve(&Approve::Removals { group: g.clone(), up_to: 150 }, "bob").await.expect("b");
        s.approve(&Approve::Past { threshold: Threshold::Deletes, up_to: 14 }, "carol").await.expect("c");
        let open = s.open_approvals().await.expect("open");
        assert_eq!(open.len(), 3);
        assert_eq!(open[0].who, "alice (uid 1000)");
        let allowed = approved(&open);
        assert_eq!(allowed.deletes, Some(14), "the latest of a kind counts");
        assert_eq!(allowed.removals.get("3a5c3221-c465-48c0-95b8-e9305786a271"), Some(&150));
        let run = s.start_run(writeback_core::RunKind::Delta).await.expect("run");
        s.use_approvals(&open.iter().map(|a| a.id).collect::<Vec<_>>(), run).await.expect("use");
        assert!(s.open_approvals().await.expect("open").is_empty(), "used: gone");
        let recent = s.recent_approvals(10).await.expect("recent");
        assert_eq!((recent.len(), recent[2].id, recent[2].used_run), (3, a, Some(run)));
        assert_eq!(s.stopped().await.expect("stopped"), Stopped::default());
        // One no cycle used within a day has lapsed.
        let old = s.approve(&Approve::Past { threshold: Threshold::Creates, up_to: 3 }, "dave").await.expect("d");
        sqlx::query("UPDATE approvals SET created_at = $1 WHERE id = $2")
            .bind(crate::ago(std::time::Duration::from_secs(25 * 3600)))
            .bind(old)
            .execute(&s.pool)
            .await
            .expect("age it");
        assert!(s.open_approvals().await.expect("open").is_empty(), "lapsed after a day");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
