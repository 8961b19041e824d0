//! The audit trail of one run: every change it made in AD (a failed operation or member value
//! made none), with the group, the member and why, for the state's `audit` table.
//!
//! Why a member was added or removed is what the cycle knows, and no more: the delta round's
//! member hints say "added/removed in the cloud"; a member the planner no longer writes says
//! why; otherwise only that the cloud and AD differed (a change in the cloud, a user no longer
//! synced, or a change made in AD by hand look the same from here).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use writeback_ad::OpOutcome;
use writeback_core::plan::{AttrChange, MemberReport, MemberStatus};
use writeback_core::{naming, AdGroup, CloudId, CloudObject, GroupReport, GroupTarget, Operation, Plan};
use writeback_store::{AuditEntry, AuditOp};

/// A delta round's member hints: group → (members said added, members said removed).
pub type Hints = BTreeMap<CloudId, (BTreeSet<CloudId>, BTreeSet<CloudId>)>;

/// The objectGUIDs of the members the plan names (written members of every group's report):
/// a member removed from one group is often still in another, and is named by it.
fn named_by_plan(plan: &Plan) -> HashMap<&str, &MemberReport> {
    let mut by_guid: HashMap<&str, &MemberReport> = HashMap::new();
    for m in plan.groups.iter().flat_map(|g| &g.members) {
        if let Some(guid) = m.ad_guid.as_deref() {
            by_guid.entry(guid).or_insert(m);
        }
    }
    by_guid
}

/// The members the round said were removed from the groups this run removed members from
/// that the plan cannot name (in no group it read any more): worth reading from Graph by id.
pub fn unnamed_removals(plan: &Plan, applied: &[(&Operation, &OpOutcome)], hints: &Hints) -> Vec<CloudId> {
    let named = named_by_plan(plan);
    let mut out = BTreeSet::new();
    for (op, _) in applied.iter().filter(|(_, o)| o.error.is_none()) {
        let Operation::RemoveMembers { cloud_id, members, .. } = op else { continue };
        let unnamed = |t: &GroupTarget| matches!(t, GroupTarget::Existing { guid, .. } if !named.contains_key(&**guid));
        if let (true, Some((_, gone))) = (members.iter().any(unnamed), hints.get(cloud_id)) {
            out.extend(gone.iter().cloned());
        }
    }
    out.into_iter().collect()
}

/// Reports for users read from Graph, by the AD object they stand for, as the anchor rule
/// takes it: synced users only, the owned groups' member value with their SID first, else the
/// objectGUID their `onPremisesImmutableId` names. To name removed members only: nothing is
/// written from them (a cloud-only user's immutable id, which anyone who may edit users can
/// set, never names who was removed).
pub fn name_users(users: &[CloudObject], groups: &[AdGroup]) -> Vec<MemberReport> {
    let by_sid: HashMap<&str, &str> = groups
        .iter()
        .flat_map(|g| g.members.iter().flatten())
        .filter_map(|r| r.sid.as_deref().map(|s| (s, r.guid.as_str())))
        .collect();
    users
        .iter()
        .filter(|u| u.is_synced())
        .filter_map(|u| {
            let sid = u.on_premises_security_identifier.as_deref();
            let by_sid = sid.and_then(|s| by_sid.get(s)).map(|g| g.to_string());
            let guid =
                by_sid.or_else(|| u.on_premises_immutable_id.as_deref().and_then(naming::guid_from_immutable_id))?;
            Some(MemberReport {
                via: None,
                cloud_id: u.id.as_str().into(),
                display_name: u.display_name.as_deref().map(Arc::from),
                kind: "user",
                status: MemberStatus::Skipped,
                reason: None,
                ad_guid: Some(guid.into()),
            })
        })
        .collect()
}

/// The changes `applied` (operations with their outcomes) made, as audit entries. `more`:
/// members the plan does not name, read for this (see [`name_users`]).
pub fn entries(
    run_id: i64,
    plan: &Plan,
    applied: &[(&Operation, &OpOutcome)],
    hints: Option<&Hints>,
    more: &[MemberReport],
) -> Vec<AuditEntry> {
    let reports: HashMap<&CloudId, &GroupReport> = plan.groups.iter().map(|g| (&g.cloud_id, g)).collect();
    let mut by_guid = named_by_plan(plan);
    for m in more {
        if let Some(guid) = m.ad_guid.as_deref() {
            by_guid.entry(guid).or_insert(m);
        }
    }
    let mut out = Vec::new();
    for (op, outcome) in applied.iter().filter(|(_, o)| o.error.is_none()) {
        let id = op.cloud_id();
        let report = reports.get(id).copied();
        let failed: HashSet<&str> = outcome.member_errors.iter().map(|(dn, _)| dn.as_str()).collect();
        let group = |op: AuditOp, dn: &str, why: String| AuditEntry {
            run_id,
            at: String::new(),
            group_id: id.clone(),
            group_name: report.map(|r| r.display_name.clone()).unwrap_or_default(),
            group_dn: dn.to_string(),
            op,
            member_id: None,
            member_name: None,
            member_dn: None,
            why,
        };
        match op {
            Operation::Add { dn, members, .. } => {
                out.push(group(AuditOp::AddGroup, dn, report.map(|r| r.reason.clone()).unwrap_or_default()));
                let why = |_: Option<&MemberReport>| "a member in the cloud (the group was created)".to_string();
                out.extend(members_of(&group(AuditOp::AddMember, dn, String::new()), members, &failed, &by_guid, why));
            }
            Operation::Update { dn, changes, .. } => {
                out.push(group(AuditOp::UpdateGroup, dn, changed(changes)));
            }
            Operation::Rename { dn, new_dn, new_parent, .. } => {
                let op = if new_parent.is_some() { AuditOp::MoveGroup } else { AuditOp::RenameGroup };
                out.push(group(op, new_dn, format!("was {dn}")));
            }
            Operation::AddMembers { group: target, members, .. } => {
                let said = hints.and_then(|h| h.get(id)).map(|(added, _)| added);
                let why = |m: Option<&MemberReport>| match (m, said) {
                    (Some(m), Some(added)) if added.contains(&*m.cloud_id) => "added in the cloud".to_string(),
                    _ => "a member in the cloud, not in AD".into(),
                };
                let base = group(AuditOp::AddMember, target.dn(), String::new());
                out.extend(members_of(&base, members, &failed, &by_guid, why));
            }
            Operation::RemoveMembers { group: target, members, .. } => {
                let said = hints.and_then(|h| h.get(id)).map(|(_, gone)| gone);
                let skipped: HashMap<&str, &MemberReport> = report
                    .into_iter()
                    .flat_map(|r| &r.members)
                    .filter(|m| m.status == MemberStatus::Skipped)
                    .map(|m| (&*m.cloud_id, &**m))
                    .collect();
                let why = |m: Option<&MemberReport>| {
                    let skip = m.and_then(|m| skipped.get(&*m.cloud_id)).and_then(|s| s.reason);
                    match (skip, m, said) {
                        (Some(reason), ..) => format!("no longer written: {reason}"),
                        (None, Some(m), Some(gone)) if gone.contains(&*m.cloud_id) => "removed in the cloud".into(),
                        _ => "in AD, but no member of the cloud group stands for it".into(),
                    }
                };
                let base = group(AuditOp::RemoveMember, target.dn(), String::new());
                out.extend(members_of(&base, members, &failed, &by_guid, why));
            }
            Operation::Delete { dn, reason, .. } => out.push(group(AuditOp::DeleteGroup, dn, reason.clone())),
            Operation::Adopt { dn, sid, .. } => {
                let why = format!("converted to the cloud: its AD group (SID {sid}) taken over in place");
                out.push(group(AuditOp::AdoptGroup, dn, why));
            }
            Operation::Release { dn, reason, .. } => out.push(group(AuditOp::ReleaseGroup, dn, reason.clone())),
        }
    }
    out
}

/// One entry per member value written (`failed`: the DNs of values that were not).
fn members_of(
    base: &AuditEntry,
    members: &[GroupTarget],
    failed: &HashSet<&str>,
    by_guid: &HashMap<&str, &MemberReport>,
    why: impl Fn(Option<&MemberReport>) -> String,
) -> Vec<AuditEntry> {
    members
        .iter()
        .filter(|t| !failed.contains(t.dn()))
        .map(|t| {
            let (m, cloud_id) = match t {
                GroupTarget::Existing { guid, .. } => (by_guid.get(&**guid).copied(), None),
                GroupTarget::New { cloud_id, .. } => (None, Some(cloud_id.to_string())),
            };
            // Without a cloud name, the name AD gives it: its RDN's value.
            let rdn = || naming::split_dn(t.dn()).0.split_once('=').map(|(_, v)| naming::unescape_rdn_value(v));
            AuditEntry {
                member_id: m.map(|m| m.cloud_id.to_string()).or(cloud_id),
                member_name: m.and_then(|m| m.display_name.as_deref().map(str::to_string)).or_else(rdn),
                member_dn: Some(t.dn().to_string()),
                why: why(m),
                ..base.clone()
            }
        })
        .collect()
}

/// What an update changed: `attr: old → new` per attribute.
fn changed(changes: &[AttrChange]) -> String {
    let show = |v: &[String]| if v.is_empty() { "(none)".to_string() } else { v.join(", ") };
    let each: Vec<String> =
        changes.iter().map(|c| format!("{}: {} → {}", c.attr, show(&c.old), show(&c.values))).collect();
    each.join("; ")
}
