//! The audit trail: every change writeback made in AD — run, time, group, operation, and for
//! member changes the member and why — kept for `[state] audit_days`. What an auditor asks:
//! "who removed Bob from SG-Finance, when, and why".

use serde::Serialize;
use sqlx::Row;
use writeback_core::CloudId;

use crate::{Result, Store};

/// What was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditOp {
    AddGroup,
    UpdateGroup,
    RenameGroup,
    MoveGroup,
    DeleteGroup,
    AddMember,
    RemoveMember,
    /// A converted group's original AD group taken over (SOA).
    AdoptGroup,
    /// A group given back: its marker removed.
    ReleaseGroup,
}

impl AuditOp {
    pub const ALL: [AuditOp; 9] = [
        AuditOp::AddGroup,
        AuditOp::UpdateGroup,
        AuditOp::RenameGroup,
        AuditOp::MoveGroup,
        AuditOp::DeleteGroup,
        AuditOp::AddMember,
        AuditOp::RemoveMember,
        AuditOp::AdoptGroup,
        AuditOp::ReleaseGroup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditOp::AddGroup => "add-group",
            AuditOp::UpdateGroup => "update-group",
            AuditOp::RenameGroup => "rename-group",
            AuditOp::MoveGroup => "move-group",
            AuditOp::DeleteGroup => "delete-group",
            AuditOp::AddMember => "add-member",
            AuditOp::RemoveMember => "remove-member",
            AuditOp::AdoptGroup => "adopt-group",
            AuditOp::ReleaseGroup => "release-group",
        }
    }

    fn parse(s: &str) -> Option<AuditOp> {
        AuditOp::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// One change made in AD.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub run_id: i64,
    /// When it was recorded (UTC, set by the state).
    pub at: String,
    pub group_id: CloudId,
    pub group_name: String,
    pub group_dn: String,
    pub op: AuditOp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_dn: Option<String>,
    pub why: String,
}

/// Which entries `writeback log` reads (all given conditions hold), newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// A group's cloud id or display name (any case).
    pub group: Option<String>,
    /// A member's cloud id, display name or DN (any case).
    pub member: Option<String>,
    /// Entries at or after this UTC time (`2026-12-01`, `2026-12-01T10:00:00Z`).
    pub since: Option<String>,
    pub limit: usize,
}

impl Store {
    /// Records the changes of one run, all or none.
    pub async fn record_audit(&self, entries: &[AuditEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let stamp = crate::now();
        for e in entries {
            sqlx::query(
                "INSERT INTO audit (run_id, at, group_id, group_name, group_dn, op, member_id, member_name, member_dn, \
                 why) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(e.run_id)
            .bind(&stamp)
            .bind(e.group_id.as_str())
            .bind(&e.group_name)
            .bind(&e.group_dn)
            .bind(e.op.as_str())
            .bind(&e.member_id)
            .bind(&e.member_name)
            .bind(&e.member_dn)
            .bind(&e.why)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let limit = if q.limit == 0 { i64::MAX } else { q.limit.min(i64::MAX as usize) as i64 };
        let rows = sqlx::query(
            "SELECT run_id, at, group_id, group_name, group_dn, op, member_id, member_name, member_dn, why FROM audit
             WHERE (CAST($1 AS TEXT) IS NULL OR group_id = lower($1) OR lower(group_name) = lower($1))
               AND (CAST($2 AS TEXT) IS NULL OR member_id = lower($2) OR lower(member_name) = lower($2)
                    OR lower(member_dn) = lower($2))
               AND (CAST($3 AS TEXT) IS NULL OR at >= $3)
             ORDER BY id DESC LIMIT $4",
        )
        .bind(&q.group)
        .bind(&q.member)
        .bind(&q.since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let op: String = r.try_get(5)?;
            let Some(op) = AuditOp::parse(&op) else { continue };
            out.push(AuditEntry {
                run_id: r.try_get(0)?,
                at: r.try_get(1)?,
                group_id: CloudId::new(r.try_get::<String, _>(2)?),
                group_name: r.try_get(3)?,
                group_dn: r.try_get(4)?,
                op,
                member_id: r.try_get(6)?,
                member_name: r.try_get(7)?,
                member_dn: r.try_get(8)?,
                why: r.try_get(9)?,
            });
        }
        Ok(out)
    }

    /// Forgets entries older than `days` days; returns how many.
    pub async fn prune_audit(&self, days: u32) -> Result<usize> {
        let cutoff = crate::ago(std::time::Duration::from_secs(u64::from(days) * 86_400));
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM audit WHERE at < $1").bind(cutoff).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(run_id: i64, op: AuditOp, member: Option<(&str, &str)>) -> AuditEntry {
        AuditEntry {
            run_id,
            at: String::new(),
            group_id: CloudId::new("3a5c3221-c465-48c0-95b8-e9305786a271"),
            group_name: "SG-Finance".into(),
            group_dn: "CN=Group_3a5c3221-c465-48c0-95b8-e9305786a271,OU=Groups,DC=corp,DC=test".into(),
            op,
            member_id: member.map(|m| m.0.to_string()),
            member_name: member.map(|m| m.1.to_string()),
            member_dn: member.map(|m| format!("CN={},CN=Users,DC=corp,DC=test", m.1)),
            why: "removed in the cloud".into(),
        }
    }

    #[tokio::test]
    async fn who_removed_bob_from_sg_finance() {
        let dir = std::env::temp_dir().join(format!("wb-audit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("state.db");
        let _ = std::fs::remove_file(&path);
        let s = Store::open(&crate::Target::Sqlite(path.clone())).await.expect("open");
        s.record_audit(&[
            entry(1, AuditOp::AddGroup, None),
            entry(1, AuditOp::AddMember, Some(("u-bob", "Bob"))),
            entry(2, AuditOp::RemoveMember, Some(("u-bob", "Bob"))),
            entry(2, AuditOp::RemoveMember, Some(("u-eve", "Eve"))),
        ])
        .await
        .expect("record");
        let q = |group: Option<&str>, member: Option<&str>| AuditQuery {
            group: group.map(String::from),
            member: member.map(String::from),
            since: None,
            limit: 0,
        };
        let bob = s.audit(&q(Some("sg-finance"), Some("BOB"))).await.expect("bob");
        assert_eq!(bob.len(), 2);
        assert_eq!((bob[0].op, bob[0].run_id, bob[0].why.as_str()), (AuditOp::RemoveMember, 2, "removed in the cloud"));
        assert!(bob[0].at.starts_with("20"), "{}", bob[0].at);
        assert_eq!(s.audit(&q(Some("3A5C3221-C465-48C0-95B8-E9305786A271"), None)).await.expect("all").len(), 4);
        let later = AuditQuery { since: Some("2999-01-01".into()), ..q(None, None) };
        assert!(s.audit(&later).await.expect("none").is_empty());
        assert_eq!(s.prune_audit(90).await.expect("prune"), 0, "nothing is 90 days old");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
