//! The domain model: what we read from the cloud, what we read from AD, and what we remember.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::{CloudId, Dn, ObjectGuid};

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `group.writebackConfiguration` (Graph beta).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WritebackConfiguration {
    #[serde(default)]
    pub is_enabled: Option<bool>,
    #[serde(default)]
    pub on_premises_group_type: Option<String>,
}

/// A Graph directory object as writeback reads it: a group, or a member of a group.
/// Only the properties writeback selects are here; everything is optional because Graph
/// data is untrusted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudObject {
    #[serde(rename = "@odata.type", default, skip_serializing_if = "Option::is_none")]
    pub odata_type: Option<String>,
    pub id: CloudId,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub group_types: Vec<String>,
    #[serde(default)]
    pub security_enabled: Option<bool>,
    #[serde(default)]
    pub mail_enabled: Option<bool>,
    #[serde(default)]
    pub mail: Option<String>,
    #[serde(default)]
    pub mail_nickname: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub proxy_addresses: Vec<String>,
    #[serde(default)]
    pub on_premises_sync_enabled: Option<bool>,
    #[serde(default)]
    pub on_premises_security_identifier: Option<String>,
    #[serde(default)]
    pub on_premises_immutable_id: Option<String>,
    #[serde(default)]
    pub writeback_configuration: Option<WritebackConfiguration>,
    /// A device's `deviceId`: for a hybrid-joined device, its computer account's objectGUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The group properties that rules and mappings read beyond the fields above, as Graph sent
    /// them (filled by the Graph client from what it `$select`ed; absent when Graph sent none).
    #[serde(skip)]
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The kind of a directory object, from `@odata.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    User,
    Group,
    Device,
    Contact,
    ServicePrincipal,
    Other,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::User => "user",
            ObjectKind::Group => "group",
            ObjectKind::Device => "device",
            ObjectKind::Contact => "contact",
            ObjectKind::ServicePrincipal => "service-principal",
            ObjectKind::Other => "other",
        }
    }
}

impl CloudObject {
    pub fn kind(&self) -> ObjectKind {
        match self.odata_type.as_deref().map(|t| t.strip_prefix("#microsoft.graph.").unwrap_or(t)) {
            Some("user") => ObjectKind::User,
            Some("group") | None => ObjectKind::Group,
            Some("device") => ObjectKind::Device,
            Some("orgContact") => ObjectKind::Contact,
            Some("servicePrincipal") => ObjectKind::ServicePrincipal,
            Some(_) => ObjectKind::Other,
        }
    }

    pub fn is_synced(&self) -> bool {
        self.on_premises_sync_enabled == Some(true)
    }

    /// A user or group that came back with its type and id only: Graph's "limited information"
    /// for objects the app may not read (permissions-overview.md). Every user and group has a
    /// display name, so one without it (and without any on-premises property) was not read: it
    /// is unknown whether it is synced, not cloud-only.
    pub fn unreadable(&self) -> bool {
        matches!(self.kind(), ObjectKind::User | ObjectKind::Group)
            && self.display_name.is_none()
            && self.on_premises_sync_enabled.is_none()
            && self.on_premises_security_identifier.is_none()
            && self.on_premises_immutable_id.is_none()
    }

    pub fn name(&self) -> &str {
        self.display_name.as_deref().unwrap_or("")
    }

    /// A group property by its Graph name, as text: none when Graph sent none or null, one
    /// value per element of a collection, `true`/`false` for a Boolean. `membership` is
    /// `dynamic` or `assigned` (from groupTypes, `DynamicMembership`).
    pub fn property(&self, name: &str) -> Vec<String> {
        let one = |v: &Option<String>| v.iter().cloned().collect();
        let flag = |v: Option<bool>| v.map(|b| b.to_string()).into_iter().collect();
        match name {
            "id" => vec![self.id.to_string()],
            "displayName" => one(&self.display_name),
            "description" => one(&self.description),
            "mail" => one(&self.mail),
            "mailNickname" => one(&self.mail_nickname),
            "proxyAddresses" => self.proxy_addresses.clone(),
            "groupTypes" => self.group_types.clone(),
            "securityEnabled" => flag(self.security_enabled),
            "mailEnabled" => flag(self.mail_enabled),
            "onPremisesSyncEnabled" => flag(self.on_premises_sync_enabled),
            "onPremisesSecurityIdentifier" => one(&self.on_premises_security_identifier),
            "membership" => {
                let dynamic = self.group_types.iter().any(|t| t.eq_ignore_ascii_case("DynamicMembership"));
                vec![if dynamic { "dynamic" } else { "assigned" }.to_string()]
            }
            other => match self.extra.get(other) {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(serde_json::Value::String(s)) => vec![s.clone()],
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .filter_map(|v| match v {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Null => None,
                        other => Some(other.to_string()),
                    })
                    .collect(),
                Some(v) => vec![v.to_string()],
            },
        }
    }
}

/// The members of one group as read from Graph. A read that did not finish is never the truth.
/// Members are shared: one user in many groups is one object (a million memberships of
/// 200,000 users took 420 MB as copies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberRead {
    Complete(Vec<Arc<CloudObject>>),
    Incomplete(String),
}

impl MemberRead {
    /// A complete read of `members` (each its own object: for tests and small inputs).
    pub fn complete(members: Vec<CloudObject>) -> Self {
        MemberRead::Complete(members.into_iter().map(Arc::new).collect())
    }
}

impl CloudSnapshot {
    /// Every member of every completely read group (a member of several groups, several times).
    pub fn complete_members(&self) -> impl Iterator<Item = &Arc<CloudObject>> {
        self.members
            .values()
            .filter_map(|r| match r {
                MemberRead::Complete(m) => Some(m),
                MemberRead::Incomplete(_) => None,
            })
            .flatten()
    }
}

/// Everything read from the cloud for one cycle.
#[derive(Clone, Debug, Default)]
pub struct CloudSnapshot {
    /// Every group of the tenant; the listing must be complete.
    pub groups: Vec<CloudObject>,
    /// Members of the groups in scope, by group id.
    pub members: HashMap<CloudId, MemberRead>,
    /// Owners of the groups in scope, by group id (read only with `write_owners`).
    pub owners: HashMap<CloudId, MemberRead>,
    /// Ids of groups in the recycle bin (soft-deleted).
    pub soft_deleted: BTreeSet<CloudId>,
    /// Objects Graph sent that could not be understood: (id or position, what is wrong).
    pub rejected: Vec<(String, String)>,
    /// `onPremisesSyncBehavior.isCloudManaged` (Graph beta, read per group) of the groups that
    /// carry an on-premises SID without being synced: converted groups, or ones given back.
    /// `None`: the read failed this cycle (not known, never guessed); absent: not asked, or the
    /// app may not read it (403).
    pub cloud_managed: HashMap<CloudId, Option<bool>>,
}

/// Where a member value points, as AD reported it (extended DN form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdRef {
    pub guid: ObjectGuid,
    pub dn: String,
    /// The objectSid, when AD named one (security principals): lets a member already in the
    /// group be recognised without looking it up.
    #[serde(skip)]
    pub sid: Option<String>,
}

/// A group carrying our ownership marker, as read from the managed OU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdGroup {
    pub guid: ObjectGuid,
    pub sid: Option<String>,
    pub dn: Dn,
    /// The cloud id from the marker.
    pub cloud_id: CloudId,
    pub cn: String,
    /// Attribute values writeback manages, lower-case attribute names.
    pub attrs: BTreeMap<String, Vec<String>>,
    pub group_type: i32,
    /// `None` when the member read did not complete.
    pub members: Option<Vec<AdRef>>,
    /// The groups this one is directly a member of, and AD's `adminCount` flag: what the
    /// Tier-0 guard starts from (read with the group, so a group nested nowhere costs nothing).
    pub member_of: Vec<AdRef>,
    pub admin_count: bool,
}

/// An AD object that a cloud member resolved to. `guid` (lower-case) and `dn` are shared
/// with every operation that names the object: one user is a member of many groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdObject {
    pub guid: Arc<str>,
    pub sid: Option<String>,
    pub dn: Arc<str>,
    /// `Some(groupType)` for groups.
    pub group_type: Option<i32>,
    /// What kind of account it is: a cloud user may only be an AD user, a synced cloud group
    /// only an AD group (see `planner::ad_object`).
    pub class: AdClass,
    /// `mS-DS-ConsistencyGuid` as a GUID string (lower-case), when set: Entra Connect's
    /// source anchor, which an `onPremisesImmutableId` may name instead of the objectGUID.
    pub source_anchor: Option<Arc<str>>,
}

/// The kind of an AD security principal, from its `objectClass` (and `sAMAccountType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdClass {
    /// A normal user account (`user` or `inetOrgPerson`, SAM_NORMAL_USER_ACCOUNT).
    User,
    Group,
    /// A computer account (a domain-joined machine, a domain controller).
    Computer,
    /// A managed or group managed service account.
    ServiceAccount,
    /// A foreign security principal (a member from a trusted forest).
    ForeignPrincipal,
    /// Anything else: a trust account, a contact, an object of another class.
    Other,
}

impl AdClass {
    /// For messages: "a computer account".
    pub fn describe(self) -> &'static str {
        match self {
            AdClass::User => "a user account",
            AdClass::Group => "a group",
            AdClass::Computer => "a computer account",
            AdClass::ServiceAccount => "a managed service account",
            AdClass::ForeignPrincipal => "a foreign security principal",
            AdClass::Other => "an object that is neither a user account nor a group",
        }
    }
}

/// What a cloud member is looked up by in AD: its objectSid, or its objectGUID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Anchor {
    Sid(String),
    Guid(String),
}

/// AD schema features that change what is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SchemaFeatures {
    /// `msDS-ExternalDirectoryObjectId` exists (Windows Server 2016 schema).
    pub external_directory_object_id: bool,
    /// Exchange attributes (`mailNickname`, `msExch*`) exist.
    pub exchange: bool,
    /// Exchange's `extensionAttribute1..15` exist (what `[[mappings]]` may set).
    pub extension_attributes: bool,
}

/// Everything read from AD for one cycle.
#[derive(Clone, Debug, Default)]
pub struct AdSnapshot {
    pub schema: SchemaFeatures,
    /// Owned groups (with our marker) in the managed OU.
    pub groups: Vec<AdGroup>,
    /// Resolved member anchors.
    pub directory: HashMap<Anchor, AdObject>,
    /// Owned groups nested into a protected group: cloud id → the nesting path.
    pub protected: BTreeMap<CloudId, String>,
    /// Groups this cycle did not find in the managed OUs although the state links them, found
    /// by objectGUID elsewhere, still carrying their marker: cloud id → where they are. Not
    /// created again (that would leave a duplicate), not written to: reported.
    pub outside: BTreeMap<CloudId, String>,
    /// The AD objects that hold the sAMAccountNames `[[mappings]]` want (lower case → their
    /// objectGUID), looked up domain-wide: a name held by another object is never taken.
    pub sam_owners: HashMap<String, ObjectGuid>,
    /// The AD groups converted cloud groups name by their on-premises SID, looked up in the
    /// whole domain (a converted group not owned yet): cloud id → what AD holds.
    pub originals: BTreeMap<CloudId, Original>,
    /// The SIDs of the forest's domains (empty: not known). A synced member whose SID is of
    /// none of them is from another forest.
    pub forest_domains: Vec<String>,
}

/// What AD holds at a converted group's SID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Original {
    /// A group with that objectSid: its `cloud_id` is the converted group's (claimed, not
    /// verified), its `attrs` include `admindescription` when set.
    Found {
        group: AdGroup,
        /// `isCriticalSystemObject` (built-in groups): never taken over.
        critical: bool,
    },
    /// No object has that SID (deleted in AD, or from another domain).
    NotFound,
    /// An object that is not a group has that SID: its class.
    NotAGroup(String),
    /// The SID is of another domain than the connected one: not looked up, never taken over.
    OtherDomain,
}

/// The AD group last written for a cloud group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub guid: ObjectGuid,
    pub dn: Dn,
}

/// What the state database remembers that matters to planning.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// cloud id → the AD group last written for it.
    pub links: HashMap<CloudId, Link>,
    /// OUs the configuration named in earlier cycles that still held owned groups: read (and
    /// emptied by moves) after the configuration changes. Only ever OUs an administrator
    /// configured, never ones derived from where groups happen to be.
    pub former_ous: Vec<String>,
    /// Groups taken over from AD whose member removals are held until approved (`writeback
    /// approve --removals`): remembered on their own, whatever a cycle plans.
    pub takeover_holds: BTreeSet<CloudId>,
}

/// AD `groupType` values.
pub mod group_type {
    pub const UNIVERSAL_DISTRIBUTION: i32 = 8;
    pub const UNIVERSAL_SECURITY: i32 = -2147483640;
    pub const DOMAIN_LOCAL_BIT: i32 = 0x4;
    pub const UNIVERSAL_BIT: i32 = 0x8;
    pub const SECURITY_BIT: i32 = i32::MIN;

    pub fn is_domain_local(gt: i32) -> bool {
        gt & DOMAIN_LOCAL_BIT != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_json_with_nulls_and_missing_fields_parses() {
        let v = serde_json::json!({
            "@odata.type": "#microsoft.graph.group", "id": "x", "groupTypes": null,
            "proxyAddresses": null, "writebackConfiguration": {"isEnabled": null, "onPremisesGroupType": null}
        });
        let o: CloudObject = serde_json::from_value(v).expect("parses");
        assert!(o.group_types.is_empty());
        assert_eq!(o.kind(), ObjectKind::Group);
        let u: CloudObject =
            serde_json::from_value(serde_json::json!({"@odata.type": "#microsoft.graph.user", "id": "u"}))
                .expect("parses");
        assert_eq!(u.kind(), ObjectKind::User);
    }
}
