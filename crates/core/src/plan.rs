//! The plan: the operations a sync would apply, and the explanation of every decision.

use std::sync::Arc;

use serde::Serialize;

/// A group an operation writes to: one that exists (addressed by objectGUID, so renames
/// earlier in the same run do not matter) or one this plan adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GroupTarget {
    Existing { guid: Arc<str>, dn: Arc<str> },
    New { cloud_id: String, dn: String },
}

impl GroupTarget {
    pub fn dn(&self) -> &str {
        match self {
            GroupTarget::Existing { dn, .. } => dn,
            GroupTarget::New { dn, .. } => dn,
        }
    }
}

/// One attribute change: replace with `values`, or delete the attribute when `values` is empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttrChange {
    pub attr: String,
    pub values: Vec<String>,
    /// The values AD had, for the explanation.
    pub old: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Operation {
    /// Create a group; `members` are members that exist in AD already (written inline).
    Add {
        cloud_id: String,
        dn: String,
        attrs: Vec<(String, Vec<String>)>,
        members: Vec<GroupTarget>,
    },
    /// Replace or delete managed attributes of an owned group.
    Update {
        cloud_id: String,
        guid: String,
        dn: String,
        changes: Vec<AttrChange>,
    },
    /// Rename and/or move an owned group (ModifyDN: objectGUID and objectSid are kept).
    Rename {
        cloud_id: String,
        guid: String,
        dn: String,
        new_rdn: String,
        new_parent: Option<String>,
        new_dn: String,
    },
    AddMembers {
        cloud_id: String,
        group: GroupTarget,
        members: Vec<GroupTarget>,
    },
    RemoveMembers {
        cloud_id: String,
        group: GroupTarget,
        members: Vec<GroupTarget>,
    },
    Delete {
        cloud_id: String,
        guid: String,
        dn: String,
        reason: String,
    },
}

impl Operation {
    pub fn cloud_id(&self) -> &str {
        match self {
            Operation::Add { cloud_id, .. }
            | Operation::Update { cloud_id, .. }
            | Operation::Rename { cloud_id, .. }
            | Operation::AddMembers { cloud_id, .. }
            | Operation::RemoveMembers { cloud_id, .. }
            | Operation::Delete { cloud_id, .. } => cloud_id,
        }
    }

    /// Order of application: renames free names before adds take them; members are
    /// written once every group exists; deletes come last.
    pub fn phase(&self) -> u8 {
        match self {
            Operation::Rename { .. } => 0,
            Operation::Add { .. } => 1,
            Operation::Update { .. } => 2,
            Operation::AddMembers { .. } => 3,
            Operation::RemoveMembers { .. } => 4,
            Operation::Delete { .. } => 5,
        }
    }
}

/// Counts, as `sync --json` and `plan --json` print them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub adds: usize,
    pub updates: usize,
    pub renames: usize,
    pub moves: usize,
    pub deletes: usize,
    pub member_adds: usize,
    pub member_removes: usize,
    pub skipped_members: usize,
    pub errors: usize,
}

/// A problem with one object; the rest of the run goes on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectError {
    pub cloud_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberStatus {
    Written,
    Skipped,
}

/// Why a member is (not) in the AD group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberReport {
    /// Shared by every group the member is in (one user, many groups).
    pub cloud_id: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Arc<str>>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: MemberStatus,
    /// One of `planner::reason` (a fixed vocabulary: metrics count by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// The explanation for one group (what `writeback show` prints).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupReport {
    pub cloud_id: String,
    pub display_name: String,
    pub in_scope: bool,
    pub reason: String,
    pub dn: Option<String>,
    pub group_type: Option<i32>,
    /// What this run does with the group, in a few words.
    pub action: String,
    /// Shared: a user's report is one object however many groups it is in. In the cloud's
    /// order: a plan of 100,000 groups need not sort what is shown for one; see
    /// [`GroupReport::members_by_id`].
    pub members: Vec<Arc<MemberReport>>,
}

impl GroupReport {
    /// The members by cloud id, as they are shown: the same order every time.
    pub fn members_by_id(&self) -> Vec<&MemberReport> {
        let mut members: Vec<&MemberReport> = self.members.iter().map(|m| &**m).collect();
        members.sort_by(|a, b| a.cloud_id.cmp(&b.cloud_id));
        members
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    pub operations: Vec<Operation>,
    #[serde(skip)]
    pub groups: Vec<GroupReport>,
    pub errors: Vec<ObjectError>,
    /// Things an administrator should know that are not errors (a group recreated, …).
    pub notices: Vec<String>,
    pub summary: Summary,
    /// Set when a threshold stops the run; nothing may be applied then.
    pub blocked: Option<String>,
    /// Groups whose member removals are held back by `member_removal_percent` (each also an
    /// error): the rest of the run is applied, and it ends stopped by a threshold.
    pub held: Vec<String>,
}

impl Plan {
    pub fn report(&self, cloud_id_or_name: &str) -> Vec<&GroupReport> {
        let needle = cloud_id_or_name.trim();
        let by_id: Vec<&GroupReport> = self.groups.iter().filter(|g| g.cloud_id.eq_ignore_ascii_case(needle)).collect();
        if !by_id.is_empty() {
            return by_id;
        }
        self.groups.iter().filter(|g| g.display_name == needle).collect()
    }

    /// Recomputes the summary from the operations, reports and errors.
    pub fn summarize(&mut self) {
        let mut s = Summary { errors: self.errors.len(), ..Summary::default() };
        for op in &self.operations {
            match op {
                Operation::Add { members, .. } => {
                    s.adds += 1;
                    s.member_adds += members.len();
                }
                Operation::Update { .. } => s.updates += 1,
                Operation::Rename { dn, new_dn, new_parent, .. } => {
                    if new_parent.is_some() {
                        s.moves += 1;
                    }
                    let (old_rdn, _) = crate::naming::split_dn(dn);
                    let (new_rdn, _) = crate::naming::split_dn(new_dn);
                    if crate::naming::normalize_dn(old_rdn) != crate::naming::normalize_dn(new_rdn) {
                        s.renames += 1;
                    }
                }
                Operation::AddMembers { members, .. } => s.member_adds += members.len(),
                Operation::RemoveMembers { members, .. } => s.member_removes += members.len(),
                Operation::Delete { .. } => s.deletes += 1,
            }
        }
        s.skipped_members = self
            .groups
            .iter()
            .filter(|g| g.in_scope)
            .flat_map(|g| &g.members)
            .filter(|m| m.status == MemberStatus::Skipped)
            .count();
        self.summary = s;
    }
}
