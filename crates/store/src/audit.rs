//! The audit trail: every change writeback made in AD — run, time, group, operation, and for
//! member changes the member and why — kept for `[state] audit_days`. What an auditor asks:
//! "who removed Bob from SG-Finance, when, and why".

use rusqlite::params;
use serde::Serialize;
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
    pub fn record_audit(&mut self, entries: &[AuditEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut ins = tx.prepare(&format!(
                "INSERT INTO audit (run_id, at, group_id, group_name, group_dn, op, member_id, member_name, member_dn, \
                 why) VALUES (?1, {}, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                crate::NOW
            ))?;
            for e in entries {
                ins.execute(params![
                    e.run_id,
                    e.group_id.as_str(),
                    e.group_name,
                    e.group_dn,
                    e.op.as_str(),
                    e.member_id,
                    e.member_name,
                    e.member_dn,
                    e.why
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let mut stmt = self.conn.prepare(
            "SELECT run_id, at, group_id, group_name, group_dn, op, member_id, member_name, member_dn, why FROM audit
             WHERE (?1 IS NULL OR group_id = lower(?1) OR lower(group_name) = lower(?1))
               AND (?2 IS NULL OR member_id = lower(?2) OR lower(member_name) = lower(?2)
                    OR lower(member_dn) = lower(?2))
               AND (?3 IS NULL OR at >= ?3)
             ORDER BY id DESC LIMIT ?4",
        )?;
        let limit = if q.limit == 0 { i64::MAX } else { q.limit as i64 };
        let rows = stmt.query_map(params![q.group, q.member, q.since, limit], |r| {
            let op: String = r.get(5)?;
            Ok(AuditOp::parse(&op).map(|op| AuditEntry {
                run_id: r.get(0).unwrap_or_default(),
                at: r.get(1).unwrap_or_default(),
                group_id: CloudId::new(r.get::<_, String>(2).unwrap_or_default()),
                group_name: r.get(3).unwrap_or_default(),
                group_dn: r.get(4).unwrap_or_default(),
                op,
                member_id: r.get(6).unwrap_or_default(),
                member_name: r.get(7).unwrap_or_default(),
                member_dn: r.get(8).unwrap_or_default(),
                why: r.get(9).unwrap_or_default(),
            }))
        })?;
        Ok(rows.filter_map(|r| r.transpose()).collect::<rusqlite::Result<_>>()?)
    }

    /// Forgets entries older than `days` days; returns how many.
    pub fn prune_audit(&self, days: u32) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM audit WHERE at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?1)",
            params![format!("-{days} days")],
        )?)
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

    #[test]
    fn who_removed_bob_from_sg_finance() {
        let dir = std::env::temp_dir().join(format!("wb-audit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("state.db");
        let _ = std::fs::remove_file(&path);
        let mut s = Store::open(&path).expect("open");
        s.record_audit(&[
            entry(1, AuditOp::AddGroup, None),
            entry(1, AuditOp::AddMember, Some(("u-bob", "Bob"))),
            entry(2, AuditOp::RemoveMember, Some(("u-bob", "Bob"))),
            entry(2, AuditOp::RemoveMember, Some(("u-eve", "Eve"))),
        ])
        .expect("record");
        let q = |group: Option<&str>, member: Option<&str>| AuditQuery {
            group: group.map(String::from),
            member: member.map(String::from),
            since: None,
            limit: 0,
        };
        let bob = s.audit(&q(Some("sg-finance"), Some("BOB"))).expect("bob");
        assert_eq!(bob.len(), 2);
        assert_eq!((bob[0].op, bob[0].run_id, bob[0].why.as_str()), (AuditOp::RemoveMember, 2, "removed in the cloud"));
        assert!(bob[0].at.starts_with("20"), "{}", bob[0].at);
        assert_eq!(s.audit(&q(Some("3A5C3221-C465-48C0-95B8-E9305786A271"), None)).expect("all").len(), 4);
        let later = AuditQuery { since: Some("2999-01-01".into()), ..q(None, None) };
        assert!(s.audit(&later).expect("none").is_empty());
        assert_eq!(s.prune_audit(90).expect("prune"), 0, "nothing is 90 days old");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
