//! The part of the configuration the planner needs. Parsing the TOML file is the binary's job.

use serde::{Deserialize, Serialize};

/// `[writeback] cn_format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CnFormat {
    /// `Group_<objectId>`, as Azure AD Connect writes it.
    #[default]
    ObjectId,
    /// `Left(Trim(displayName), 51) + "_" + last 12 characters of objectId`.
    DisplayName,
}

/// `[writeback] nested`: how a nested cloud group that is not itself written back is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nested {
    /// As Microsoft does: a nested group is a member only when it is written back itself.
    #[default]
    Link,
    /// Its transitive members that exist in AD are written instead (each shown `via` it).
    Flatten,
}

/// What happens to an AD group when its cloud group leaves scope or is soft-deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnRemoval {
    #[default]
    Keep,
    Delete,
}

/// What one run may go past: everything (`sync --allow-deletes`, `--allow-creates`), or what an
/// administrator approved for the next cycle with `writeback approve`, up to a count. The
/// daemon goes past a threshold only with an approval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Allow {
    /// The delete and member removal thresholds (whole run and per group) do not stop it.
    pub deletes: bool,
    /// The create threshold does not stop it.
    pub creates: bool,
    pub approved: Approved,
}

/// What `writeback approve` let the next cycle do past the thresholds, at most.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Approved {
    /// Group deletes past `delete_threshold`.
    pub deletes: Option<usize>,
    /// Group creations past `create_threshold`.
    pub creates: Option<usize>,
    /// Member removals of the whole run past `member_removal_threshold`.
    pub member_removals: Option<usize>,
    /// One group's member removals past `member_removal_percent`.
    pub removals: std::collections::BTreeMap<crate::CloudId, usize>,
}

impl Allow {
    pub fn deletes_ok(&self, n: usize) -> bool {
        self.deletes || self.approved.deletes.is_some_and(|a| n <= a)
    }

    pub fn creates_ok(&self, n: usize) -> bool {
        self.creates || self.approved.creates.is_some_and(|a| n <= a)
    }

    pub fn member_removals_ok(&self, n: usize) -> bool {
        self.deletes || self.approved.member_removals.is_some_and(|a| n <= a)
    }

    /// `group`: a cloud id in lower case (as a `CloudId` holds it).
    /// A group taken over from AD: only `approve --removals` lets its removals through (not
    /// `--allow-deletes`, which is about thresholds).
    pub fn takeover_removals_ok(&self, group: &str, n: usize) -> bool {
        self.approved.removals.get(group).is_some_and(|a| n <= *a)
    }

    pub fn group_removals_ok(&self, group: &str, n: usize) -> bool {
        self.deletes || self.approved.removals.get(group).is_some_and(|a| n <= *a)
    }
}

/// A group's removals are held when they are more than this many…
pub const GROUP_REMOVALS_MIN: usize = 100;

/// Everything the planner needs to know beyond the two snapshots and the state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlannerConfig {
    pub target_ou: String,
    pub cn_format: CnFormat,
    pub delete_threshold: usize,
    pub member_removal_threshold: usize,
    /// A run creating more groups than this stops before writing.
    pub create_threshold: usize,
    /// …and more than this percentage of the group's members (see [`GROUP_REMOVALS_MIN`]).
    pub member_removal_percent: usize,
    pub on_out_of_scope: OnRemoval,
    pub on_soft_delete: OnRemoval,
    /// What this run may go past.
    pub allow: Allow,
    /// OUs whose owned groups are managed where they are instead of moved to the target OU.
    pub stay_in: Vec<String>,
    /// `[[rules]]`, in order.
    pub rules: Vec<crate::rules::Rule>,
    /// Write `managedBy` from the first owner that resolves to an AD user.
    pub write_owners: bool,
    /// Cloud ids whose membership may change although the group is nested into a protected group.
    pub allow_protected_nesting: Vec<crate::CloudId>,
    /// OUs in which the original AD groups of converted cloud groups (SOA) are taken over in
    /// place, by SID; their groups stay where they are.
    pub converted_ous: Vec<String>,
    /// Groups taken over in `converted_ous` get writeback's cn and sAMAccountName (default: they
    /// keep AD's).
    pub rename_converted: bool,
    /// Device members synced from AD are written as their computer accounts (Group Writeback
    /// V2 did; Cloud Sync does not).
    pub write_devices: bool,
    /// `[[mappings]]`: attributes set from templates over group properties.
    pub mappings: Vec<crate::mapping::Mapping>,
    pub nested: Nested,
}

impl PlannerConfig {
    /// A fingerprint of every setting that shapes a plan, but for what one run may go past
    /// (`allow`): a delta cycle is valid only under the settings the last cycle ran with. Every
    /// field is in it by construction (the hash of the whole value), so a setting cannot shape
    /// the plan without being compared. `DefaultHasher::new()` has fixed keys; a new Rust could
    /// hash differently, which only costs one full cycle.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        PlannerConfig { allow: Allow::default(), ..self.clone() }.hash(&mut h);
        h.finish()
    }

    /// The spec's defaults for a target OU.
    pub fn with_target_ou(target_ou: impl Into<String>) -> Self {
        PlannerConfig {
            target_ou: target_ou.into(),
            cn_format: CnFormat::ObjectId,
            delete_threshold: 500,
            member_removal_threshold: 10_000,
            create_threshold: 500,
            member_removal_percent: 50,
            on_out_of_scope: OnRemoval::Keep,
            on_soft_delete: OnRemoval::Keep,
            allow: Allow::default(),
            stay_in: Vec::new(),
            rules: Vec::new(),
            write_owners: false,
            allow_protected_nesting: Vec::new(),
            converted_ous: Vec::new(),
            rename_converted: false,
            write_devices: false,
            mappings: Vec::new(),
            nested: Nested::Link,
        }
    }
}
