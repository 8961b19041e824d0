//! The plan: the operations a sync would apply, and the explanation of every decision.

use std::sync::Arc;

use serde::Serialize;

use crate::ids::{CloudId, ObjectGuid};

/// A group an operation writes to: one that exists (addressed by objectGUID, so renames
/// earlier in the same run do not matter) or one this plan adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GroupTarget {
    Existing { guid: Arc<str>, dn: Arc<str> },
    New { cloud_id: CloudId, dn: String },
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
        cloud_id: CloudId,
        dn: String,
        attrs: Vec<(String, Vec<String>)>,
        members: Vec<GroupTarget>,
    },
    /// Replace or delete managed attributes of an owned group.
    Update {
        cloud_id: CloudId,
        guid: ObjectGuid,
        dn: String,
        changes: Vec<AttrChange>,
    },
    /// Rename and/or move an owned group (ModifyDN: objectGUID and objectSid are kept).
    Rename {
        cloud_id: CloudId,
        guid: ObjectGuid,
        dn: String,
        new_rdn: String,
        new_parent: Option<String>,
        new_dn: String,
    },
    AddMembers {
        cloud_id: CloudId,
        group: GroupTarget,
        members: Vec<GroupTarget>,
    },
    RemoveMembers {
        cloud_id: CloudId,
        group: GroupTarget,
        members: Vec<GroupTarget>,
    },
    Delete {
        cloud_id: CloudId,
        guid: ObjectGuid,
        dn: String,
        reason: String,
    },
    /// Take over the original AD group of a converted cloud group (SOA) in place: once AD
    /// confirms it is still the group with `sid` and carries no other marker, stamp `marker`
    /// (the ownership attributes). Its DN, cn and sAMAccountName are kept.
    Adopt {
        cloud_id: CloudId,
        guid: ObjectGuid,
        dn: String,
        sid: String,
        marker: Vec<(String, Vec<String>)>,
    },
    /// Stop managing a group: remove the ownership attributes `marker` (ours only), keep the
    /// group and its members.
    Release {
        cloud_id: CloudId,
        guid: ObjectGuid,
        dn: String,
        marker: Vec<String>,
        reason: String,
    },
}

impl Operation {
    pub fn cloud_id(&self) -> &CloudId {
        match self {
            Operation::Add { cloud_id, .. }
            | Operation::Update { cloud_id, .. }
            | Operation::Rename { cloud_id, .. }
            | Operation::AddMembers { cloud_id, .. }
            | Operation::RemoveMembers { cloud_id, .. }
            | Operation::Delete { cloud_id, .. }
            | Operation::Adopt { cloud_id, .. }
            | Operation::Release { cloud_id, .. } => cloud_id,
        }
    }

    /// Order of application: renames free names before adds take them; members are
    /// written once every group exists; deletes come last.
    pub fn phase(&self) -> u8 {
        match self {
            // Before anything else is written to the group: it makes it ours (or fails, and then
            // nothing else is written to it).
            Operation::Adopt { .. } => 0,
            Operation::Rename { .. } => 1,
            Operation::Add { .. } => 2,
            Operation::Update { .. } | Operation::Release { .. } => 3,
            Operation::AddMembers { .. } => 4,
            Operation::RemoveMembers { .. } => 5,
            Operation::Delete { .. } => 6,
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

impl Summary {
    /// Counts one operation (an add's members are member adds).
    pub fn count(&mut self, op: &Operation) {
        match op {
            Operation::Add { members, .. } => {
                self.adds += 1;
                self.member_adds += members.len();
            }
            Operation::Update { .. } | Operation::Adopt { .. } | Operation::Release { .. } => self.updates += 1,
            Operation::Rename { dn, new_dn, new_parent, .. } => {
                if new_parent.is_some() {
                    self.moves += 1;
                }
                let (old_rdn, _) = crate::naming::split_dn(dn);
                let (new_rdn, _) = crate::naming::split_dn(new_dn);
                if crate::naming::normalize_dn(old_rdn) != crate::naming::normalize_dn(new_rdn) {
                    self.renames += 1;
                }
            }
            Operation::AddMembers { members, .. } => self.member_adds += members.len(),
            Operation::RemoveMembers { members, .. } => self.member_removes += members.len(),
            Operation::Delete { .. } => self.deletes += 1,
        }
    }

    /// Short headings for tables, in the order of [`Summary::columns`].
    pub const HEADINGS: [&'static str; 9] = ["adds", "upd", "ren", "mov", "del", "+memb", "-memb", "skipped", "errors"];

    /// The counts under their names in `sync --json` and in the state's run history, in order:
    /// the one list every table, document and query takes them from.
    pub fn columns(&self) -> [(&'static str, usize); 9] {
        [
            ("adds", self.adds),
            ("updates", self.updates),
            ("renames", self.renames),
            ("moves", self.moves),
            ("deletes", self.deletes),
            ("member_adds", self.member_adds),
            ("member_removes", self.member_removes),
            ("skipped_members", self.skipped_members),
            ("errors", self.errors),
        ]
    }

    /// A summary from its counts in the order of [`Summary::columns`].
    pub fn from_columns(v: [usize; 9]) -> Summary {
        let [adds, updates, renames, moves, deletes, member_adds, member_removes, skipped_members, errors] = v;
        Summary { adds, updates, renames, moves, deletes, member_adds, member_removes, skipped_members, errors }
    }
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

/// Why a cloud member is not written to its AD group: a closed vocabulary, shown by `show`,
/// counted by the metrics, in the spec's words (`cloud-only`, `not-found-in-ad`…).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// Not synced from AD.
    CloudOnly,
    /// Synced, but AD has no object with its anchor.
    NotFoundInAd,
    /// Its anchor names an object that is not what it claims to be.
    AnchorMismatch,
    /// A cloud group that is not itself written back.
    NestedGroupNotWrittenBack,
    /// "A universal group cannot have a local group as a member".
    DomainLocalGroup,
    /// A contact or service principal, or a device without `write_devices`.
    UnsupportedMemberType,
    /// Graph returned only its type and id (the app may not read it).
    Unreadable,
    /// A device not synced from AD (Entra joined or registered): it has no computer account.
    CloudOnlyDevice,
    /// From another forest: a universal group cannot hold foreign security principals.
    OtherForest,
}

impl SkipReason {
    pub const ALL: [SkipReason; 9] = [
        SkipReason::CloudOnly,
        SkipReason::NotFoundInAd,
        SkipReason::AnchorMismatch,
        SkipReason::NestedGroupNotWrittenBack,
        SkipReason::DomainLocalGroup,
        SkipReason::UnsupportedMemberType,
        SkipReason::Unreadable,
        SkipReason::CloudOnlyDevice,
        SkipReason::OtherForest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::CloudOnly => "cloud-only",
            SkipReason::NotFoundInAd => "not-found-in-ad",
            SkipReason::AnchorMismatch => "anchor-mismatch",
            SkipReason::NestedGroupNotWrittenBack => "nested-group-not-written-back",
            SkipReason::DomainLocalGroup => "domain-local-group",
            SkipReason::UnsupportedMemberType => "unsupported-member-type",
            SkipReason::Unreadable => "unreadable",
            SkipReason::CloudOnlyDevice => "cloud-only-device",
            SkipReason::OtherForest => "other-forest",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<SkipReason>,
    /// With `nested = "flatten"`: the nested group (display name) it came through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<Arc<str>>,
    /// The objectGUID of the AD object a written member stands for (shared, like the report):
    /// what names a member value in the audit trail.
    #[serde(skip)]
    pub ad_guid: Option<Arc<str>>,
}

/// The explanation for one group (what `writeback show` prints).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupReport {
    pub cloud_id: CloudId,
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
    pub blocked: Option<Blocked>,
    /// Groups whose member removals are held back by `member_removal_percent` (each also an
    /// error): the rest of the run is applied, and it ends stopped by a threshold.
    pub held: Vec<Held>,
    /// Groups whose new members the Tier-0 guard held back (each also an error).
    pub guarded: Vec<Guarded>,
    /// Groups taken over from AD whose removals need no hold any more: none left, or approved
    /// (then planned here). The state forgets their hold once this plan is applied.
    #[serde(skip)]
    pub takeover_cleared: Vec<CloudId>,
}

impl Plan {
    /// The takeover holds to remember after this plan: `before`, with the ones it holds, less
    /// the ones it cleared whose removals (if any) did not fail.
    pub fn takeover_holds(
        &self,
        before: &std::collections::BTreeSet<CloudId>,
        failed: &std::collections::BTreeSet<CloudId>,
    ) -> std::collections::BTreeSet<CloudId> {
        let mut holds = before.clone();
        holds.extend(self.held.iter().filter(|h| h.taken_over).map(|h| h.cloud_id.clone()));
        for id in self.takeover_cleared.iter().filter(|id| !failed.contains(*id)) {
            holds.remove(id);
        }
        holds
    }
}

/// The thresholds that stop a whole run before anything is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Threshold {
    /// `delete_threshold`: groups deleted.
    Deletes,
    /// `member_removal_threshold`: members removed across the run.
    MemberRemovals,
    /// `create_threshold`: groups created.
    Creates,
}

impl Threshold {
    /// The option of `writeback approve` that lets the next cycle past it.
    pub fn approve_option(self) -> &'static str {
        match self {
            Threshold::Deletes => "--deletes",
            Threshold::MemberRemovals => "--member-removals",
            Threshold::Creates => "--creates",
        }
    }

    /// The option of `writeback sync` that lets one run past it (no daemon running).
    pub fn sync_option(self) -> &'static str {
        match self {
            Threshold::Deletes | Threshold::MemberRemovals => "--allow-deletes",
            Threshold::Creates => "--allow-creates",
        }
    }
}

/// A run a threshold stopped before anything was written: which, how far past it, and the
/// message (with the commands that go ahead). Reads as its message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Blocked {
    pub threshold: Threshold,
    /// What the run would have done (deletes, removals or creates).
    pub count: usize,
    pub message: String,
}

impl Blocked {
    /// The command that lets the next cycle (the daemon's too) do exactly this much.
    pub fn approve_command(&self) -> String {
        format!("writeback approve {} {}", self.threshold.approve_option(), self.count)
    }
}

impl std::ops::Deref for Blocked {
    type Target = str;
    fn deref(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A group whose member removals `member_removal_percent` held back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Held {
    pub cloud_id: CloudId,
    pub display_name: String,
    pub removals: usize,
    pub message: String,
    /// Held because the group was taken over from AD (SOA): held again every cycle until
    /// approved, whatever their number.
    #[serde(default)]
    pub taken_over: bool,
}

/// A group whose new members the Tier-0 guard held back: nested into a protected group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Guarded {
    pub cloud_id: CloudId,
    pub display_name: String,
    /// How it is nested into the protected group.
    pub path: String,
    /// New members held back.
    pub held: usize,
}

impl Guarded {
    /// What lets its members through: no command goes past the guard for a cycle, the
    /// configuration (reviewed like any change to Tier 0) does.
    /// The hold in one line, as `status`, `approve` and `/healthz` say it.
    pub fn describe(&self) -> String {
        format!("{} new members of {} ({}): {}", self.held, self.display_name, self.path, self.resolution())
    }

    pub fn resolution(&self) -> String {
        format!(
            "remove the nesting, or add \"{}\" to [writeback] allow_protected_nesting and reload \
             (systemctl reload writeback)",
            self.cloud_id
        )
    }
}

/// What stopped a run, or part of it: a threshold (nothing written) or groups whose removals
/// were held (the rest written). Kept in the state until a run goes through, for `approve` and
/// `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Stopped {
    pub blocked: Option<Blocked>,
    pub held: Vec<Held>,
    /// Groups the Tier-0 guard held new members of.
    #[serde(default)]
    pub guarded: Vec<Guarded>,
}

impl Stopped {
    pub fn is_empty(&self) -> bool {
        self.blocked.is_none() && self.held.is_empty() && self.guarded.is_empty()
    }

    /// The commands that let the next cycle go ahead, one per threshold or group.
    pub fn approve_commands(&self) -> Vec<String> {
        self.blocked.iter().map(Blocked::approve_command).chain(self.held.iter().map(Held::approve_command)).collect()
    }
}

impl Held {
    /// The command that lets the next cycle make these removals.
    pub fn approve_command(&self) -> String {
        format!("writeback approve --removals {}", self.cloud_id)
    }
}

impl Plan {
    /// The groups named `cloud_id_or_name`: by id, else by display name (any case).
    pub fn report(&self, cloud_id_or_name: &str) -> Vec<&GroupReport> {
        let needle = cloud_id_or_name.trim();
        let by_id: Vec<&GroupReport> = self.groups.iter().filter(|g| g.cloud_id == needle).collect();
        if !by_id.is_empty() {
            return by_id;
        }
        let lower = needle.to_lowercase();
        self.groups.iter().filter(|g| g.display_name.to_lowercase() == lower).collect()
    }

    /// This plan for the groups named `cloud_id_or_name` only: their operations, errors and
    /// explanations, counted again. Whether a sync would stop stays the whole plan's.
    pub fn only(&self, cloud_id_or_name: &str) -> Plan {
        let ids: std::collections::HashSet<&CloudId> =
            self.report(cloud_id_or_name).into_iter().map(|g| &g.cloud_id).collect();
        let mut p = Plan {
            operations: self.operations.iter().filter(|o| ids.contains(o.cloud_id())).cloned().collect(),
            groups: self.groups.iter().filter(|g| ids.contains(&g.cloud_id)).cloned().collect(),
            errors: self.errors.iter().filter(|e| ids.iter().any(|id| **id == e.cloud_id)).cloned().collect(),
            notices: Vec::new(),
            summary: Summary::default(),
            blocked: self.blocked.clone(),
            held: self.held.iter().filter(|h| ids.contains(&h.cloud_id)).cloned().collect(),
            guarded: self.guarded.iter().filter(|h| ids.contains(&h.cloud_id)).cloned().collect(),
            takeover_cleared: self.takeover_cleared.iter().filter(|id| ids.contains(id)).cloned().collect(),
        };
        p.summarize();
        p
    }

    /// Recomputes the summary from the operations, reports and errors.
    pub fn summarize(&mut self) {
        let mut s = Summary { errors: self.errors.len(), ..Summary::default() };
        for op in &self.operations {
            s.count(op);
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

#[cfg(test)]
mod tests {
    use super::{SkipReason, Summary};

    #[test]
    fn the_columns_are_the_summary_and_its_json() {
        let s = Summary::from_columns([1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let json = serde_json::to_value(&s).expect("json");
        for (name, n) in s.columns() {
            assert_eq!(json[name], n, "{name}");
        }
        assert_eq!(json.as_object().map(|o| o.len()), Some(9), "every field is a column");
    }

    #[test]
    fn skip_reasons_serialize_as_the_spec_names_them() {
        for r in SkipReason::ALL {
            assert_eq!(serde_json::to_value(r).expect("json"), serde_json::json!(r.as_str()));
        }
    }
}
