//! Reading: the owned groups of a managed OU (paged, members ranged), what changed since a
//! USN, and member resolution.

use std::collections::{BTreeMap, HashMap};

use futures_util::StreamExt;
use ldap3::controls::RawControl;
use ldap3::{Scope, SearchEntry};
use writeback_core::model::{AdClass, AdGroup, AdObject, AdRef, Anchor, Original};
use writeback_core::{naming, CloudId, Dn, ObjectGuid};

use crate::search::Answer;
use crate::{parse_extended_dn, AdConn, AdError};

/// Anchors per member lookup (one OR filter). Samba re-evaluates the whole OR for every entry
/// it finds, and pays a fixed cost per search: 100,000 objectSids took its process 5.4-6.1 s
/// of CPU in ORs of 20-30, 6.6 s of 50, 8.0-8.6 s of 10 (and 12.9 s in ORs of 100 for 60,000
/// on an older DC).
const LOOKUP_BATCH: usize = 25;
/// Cloud ids per marker search of a delta cycle (an OR of `adminDescription` values).
const MARKER_BATCH: usize = 50;
/// Resolution searches sent before the first is answered.
const RESOLVE_IN_FLIGHT: usize = 4;

/// LDAP_SERVER_EXTENDED_DN_OID with flag 1: `<GUID=…>;<SID=…>;DN` in string form.
pub(crate) fn extended_dn() -> RawControl {
    RawControl { ctype: "1.2.840.113556.1.4.529".into(), crit: false, val: Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]) }
}

/// What a member lookup reads: enough to tell a user account from a computer, a service
/// account, a foreign principal or a group, the group's scope, and Entra Connect's source anchor.
const LOOKUP_ATTRS: &[&str] = &["objectClass", "sAMAccountType", "groupType", "mS-DS-ConsistencyGuid"];
/// `sAMAccountType` of a normal user account (SAM_NORMAL_USER_ACCOUNT, MS-SAMR 2.2.1.9):
/// not a machine (0x30000001) or trust account (0x30000002).
const SAM_NORMAL_USER_ACCOUNT: u32 = 0x3000_0000;

/// The class of an object from its `objectClass` values (every class of its chain, so the
/// most specific decides) and `sAMAccountType`.
pub(crate) fn classify(classes: &[String], sam_account_type: Option<u32>) -> AdClass {
    let has = |c: &str| classes.iter().any(|x| x.eq_ignore_ascii_case(c));
    if has("foreignSecurityPrincipal") {
        AdClass::ForeignPrincipal
    } else if has("msDS-GroupManagedServiceAccount")
        || has("msDS-ManagedServiceAccount")
        || has("msDS-DelegatedManagedServiceAccount")
    {
        AdClass::ServiceAccount
    } else if has("computer") {
        AdClass::Computer
    } else if has("group") {
        AdClass::Group
    } else if has("user") && sam_account_type == Some(SAM_NORMAL_USER_ACCOUNT) {
        AdClass::User
    } else {
        AdClass::Other
    }
}

/// A binary attribute's first value (ldap3 keeps values that are not UTF-8 apart).
fn binary(e: &SearchEntry, attr: &str) -> Option<Vec<u8>> {
    let find = |m: &HashMap<String, Vec<Vec<u8>>>| {
        m.iter().find(|(k, _)| k.eq_ignore_ascii_case(attr)).and_then(|(_, v)| v.first().cloned())
    };
    find(&e.bin_attrs).or_else(|| {
        e.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(attr))
            .and_then(|(_, v)| v.first())
            .map(|s| s.as_bytes().to_vec())
    })
}

/// Attributes the planner compares, by their lower-case names.
const MANAGED: &[&str] =
    &["sAMAccountName", "displayName", "description", "adminDescription", "mail", "proxyAddresses", "managedBy"];

impl AdConn {
    /// Every group with our marker in `ou`'s tree, with complete member lists — or `None`
    /// as the members of a group whose ranged read failed.
    pub async fn read_owned_groups(&mut self, ous: &[String]) -> Result<Vec<AdGroup>, AdError> {
        let mut out = Vec::new();
        for ou in ous {
            let tree = self.tree(ou).await?;
            out.extend(self.read_groups(&tree, None).await?);
        }
        Ok(dedupe(out))
    }

    /// The owned groups of `ou` whose marker names one of `cloud_ids` (for a delta cycle).
    pub async fn read_owned_groups_by_ids(
        &mut self,
        ous: &[String],
        cloud_ids: &[CloudId],
    ) -> Result<Vec<AdGroup>, AdError> {
        let mut out = Vec::new();
        for ou in ous {
            out.extend(self.read_owned_groups_by_ids_in(ou, cloud_ids).await?);
        }
        Ok(dedupe(out))
    }

    async fn read_owned_groups_by_ids_in(&mut self, ou: &str, cloud_ids: &[CloudId]) -> Result<Vec<AdGroup>, AdError> {
        let tree = self.tree(ou).await?;
        let mut out = Vec::new();
        for chunk in cloud_ids.chunks(MARKER_BATCH) {
            let terms: String = chunk
                .iter()
                .filter(|id| naming::is_guid(id))
                .map(|id| format!("(adminDescription={})", crate::ldap_text::escape_filter(&naming::marker(id))))
                .collect();
            if !terms.is_empty() {
                out.extend(self.read_groups(&tree, Some(format!("(|{terms})"))).await?);
            }
        }
        Ok(out)
    }

    /// `highestCommittedUSN` of this DC and the DC's identity (USNs are per DC).
    pub async fn highest_usn(&mut self) -> Result<(u64, String), AdError> {
        let e = self.root_dse(vec!["highestCommittedUSN", "dsServiceName"]).await?;
        let usn = e.attrs.get("highestCommittedUSN").and_then(|v| v.first()).and_then(|s| s.parse().ok()).unwrap_or(0);
        let dc =
            e.attrs.get("dsServiceName").and_then(|v| v.first()).cloned().unwrap_or_else(|| self.dns_host_name.clone());
        Ok((usn, dc))
    }

    /// Owned groups in `ou` changed (by anyone) at or after `usn` on this DC: (cloud id, uSNChanged).
    pub async fn owned_changed_since(&mut self, ous: &[String], usn: u64) -> Result<Vec<(CloudId, u64)>, AdError> {
        let mut out = Vec::new();
        for ou in ous {
            out.extend(self.owned_changed_since_in(ou, usn).await?);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn owned_changed_since_in(&mut self, ou: &str, usn: u64) -> Result<Vec<(CloudId, u64)>, AdError> {
        let filter = format!("(&(objectClass=group)(adminDescription=Group_*)(uSNChanged>={usn}))");
        let attrs = vec!["adminDescription".into(), "uSNChanged".into()];
        let tree = self.tree(ou).await?;
        let entries = self.search_tree(Answer::Whole, &tree, &filter, attrs, vec![]).await?;
        Ok(entries
            .iter()
            .filter_map(|e| {
                let usn = e.attrs.get("uSNChanged").and_then(|v| v.first()).and_then(|u| u.parse().ok()).unwrap_or(0);
                let marker = e.attrs.get("adminDescription").and_then(|v| v.first())?;
                naming::parse_marker(marker).map(|id| (id, usn))
            })
            .collect())
    }

    /// objectGUIDs of groups deleted (anywhere) at or after `usn`: tombstones keep their GUID,
    /// not their marker, so the caller matches them against its links. Tombstones live in the
    /// Deleted Objects container: one level of it (see `search_tree` for why not a subtree).
    pub async fn deleted_groups_since(&mut self, usn: u64) -> Result<Vec<ObjectGuid>, AdError> {
        let show_deleted = RawControl { ctype: "1.2.840.113556.1.4.417".into(), crit: true, val: None };
        let filter = format!("(&(isDeleted=TRUE)(objectClass=group)(uSNChanged>={usn}))");
        let base = format!("CN=Deleted Objects,{}", self.default_nc);
        let entries = self
            .search_all(
                Answer::Whole,
                &base,
                Scope::OneLevel,
                &filter,
                vec!["1.1".into()],
                vec![show_deleted, extended_dn()],
            )
            .await
            .map_err(|e| AdError::ldap("searching deleted objects", e))?;
        Ok(entries.iter().filter_map(|e| parse_extended_dn(&e.dn).0).collect())
    }

    /// What a group is read with: the managed attributes, its members (ranged) and nesting.
    fn group_attrs(&self) -> Vec<String> {
        let mut attrs: Vec<String> = MANAGED.iter().map(|s| s.to_string()).collect();
        // An explicit first range: Windows ranges `member` at 1,500 values on its own, Samba only
        // when asked; asking makes both take the same (ranged) path for large groups.
        attrs.extend(["cn", "groupType", "member;range=0-1499", "memberOf", "adminCount"].map(String::from));
        if self.schema.external_directory_object_id {
            attrs.push("msDS-ExternalDirectoryObjectId".into());
        }
        if self.schema.exchange {
            attrs.push("mailNickname".into());
        }
        let also: Vec<String> =
            self.also_read.iter().filter(|a| !attrs.iter().any(|b| b.eq_ignore_ascii_case(a))).cloned().collect();
        attrs.extend(also);
        attrs
    }

    /// The objects that hold these sAMAccountNames anywhere in the domain: lower-case name →
    /// objectGUID (in `OR` filters of 100, values escaped).
    pub async fn sam_owners(&mut self, names: &[String]) -> Result<HashMap<String, ObjectGuid>, AdError> {
        let mut out = HashMap::new();
        let base = self.default_nc.clone();
        for chunk in names.chunks(100) {
            let parts: String =
                chunk.iter().map(|n| format!("(sAMAccountName={})", ldap3::ldap_escape(n.as_str()))).collect();
            let filter = format!("(|{parts})");
            let (entries, _) = self
                .op()
                .with_controls(vec![extended_dn()])
                .search(&base, Scope::Subtree, &filter, vec!["sAMAccountName"])
                .await
                .and_then(|r| r.success())
                .map_err(|e| AdError::ldap("looking up sAMAccountNames", e))?;
            for e in entries.into_iter().map(SearchEntry::construct) {
                let sam = e.attrs.get("sAMAccountName").and_then(|v| v.first()).map(|s| s.to_lowercase());
                if let (Some(sam), (Some(guid), _, _)) = (sam, parse_extended_dn(&e.dn)) {
                    out.insert(sam, guid);
                }
            }
        }
        Ok(out)
    }

    /// The objects converted cloud groups name by SID, looked up in the whole domain: a group
    /// is read as it is (members complete, or `None`), whoever owns it; the planner decides.
    pub async fn originals_by_sid(
        &mut self,
        converted: &[(CloudId, String)],
    ) -> Result<BTreeMap<CloudId, Original>, AdError> {
        let mut out = BTreeMap::new();
        let domain = if converted.is_empty() { String::new() } else { self.domain_sid().await? };
        for (id, sid) in converted {
            // Of another domain: not searched here (not finding it must not read as "gone").
            if sid.rsplit_once('-').is_none_or(|(d, _)| !d.eq_ignore_ascii_case(&domain)) {
                out.insert(id.clone(), Original::OtherDomain);
            } else if naming::is_sid(sid) {
                let base = self.default_nc.clone();
                let found = self.original(&base, Scope::Subtree, &format!("(objectSid={sid})"), id).await?;
                out.insert(id.clone(), found);
            }
        }
        Ok(out)
    }

    /// The object at `dn`, read as [`originals_by_sid`] reads one (`adopt` by hand).
    pub async fn original_at(&mut self, dn: &str, id: &CloudId) -> Result<Original, AdError> {
        self.original(dn, Scope::Base, "(objectClass=*)", id).await
    }

    async fn original(&mut self, base: &str, scope: Scope, filter: &str, id: &CloudId) -> Result<Original, AdError> {
        let mut attrs = self.group_attrs();
        attrs.extend(["objectClass", "sAMAccountType", "isCriticalSystemObject"].map(String::from));
        self.ops += 1;
        let res = self
            .op()
            .with_controls(vec![extended_dn()])
            .search(base, scope, filter, attrs)
            .await
            .map_err(|e| AdError::ldap(format!("looking up {filter} in {base}"), e))?;
        if res.1.rc == 32 {
            return Ok(Original::NotFound);
        }
        let (entries, _) = res.success().map_err(|e| AdError::ldap(format!("looking up {filter} in {base}"), e))?;
        let Some(e) = entries.into_iter().filter(|e| !e.is_ref()).map(SearchEntry::construct).next() else {
            return Ok(Original::NotFound);
        };
        let classes = e.attrs.get("objectClass").map(Vec::as_slice).unwrap_or_default();
        let account_type = e.attrs.get("sAMAccountType").and_then(|v| v.first()).and_then(|s| s.parse().ok());
        let (AdClass::Group, Some(mut group)) = (classify(classes, account_type), group_from(&e, id.clone())) else {
            return Ok(Original::NotAGroup(classify(classes, account_type).describe().to_string()));
        };
        if let Some(next) = ranged_start(&e) {
            let have = group.members.take().unwrap_or_default();
            group.members = self.read_member_ranges(&group.dn, next, have).await;
        }
        let critical = group
            .attrs
            .remove("iscriticalsystemobject")
            .is_some_and(|v| v.first().is_some_and(|t| t.eq_ignore_ascii_case("TRUE")));
        group.attrs.remove("objectclass");
        group.attrs.remove("samaccounttype");
        Ok(Original::Found { group, critical })
    }

    async fn read_groups(&mut self, tree: &[String], only: Option<String>) -> Result<Vec<AdGroup>, AdError> {
        let attrs = self.group_attrs();
        let mut marker_filter = "(adminDescription=Group_*)".to_string();
        if self.schema.external_directory_object_id {
            marker_filter = format!("(|{marker_filter}(msDS-ExternalDirectoryObjectId=Group_*))");
        }
        let filter = format!("(&(objectClass=group){marker_filter}{})", only.unwrap_or_default());
        let entries = self.search_tree(Answer::Paged, tree, &filter, attrs, vec![extended_dn()]).await?;

        let mut groups = Vec::with_capacity(entries.len());
        for e in entries {
            if let Some(mut g) = to_group(&e) {
                if let Some(next) = ranged_start(&e) {
                    g.members = self.read_member_ranges(&g.dn, next, g.members.take().unwrap_or_default()).await;
                }
                groups.push(g);
            }
        }
        Ok(groups)
    }

    /// Follows `member;range=lo-hi` until `lo-*`. Any failure makes the read incomplete.
    async fn read_member_ranges(&mut self, dn: &str, mut next: usize, mut members: Vec<AdRef>) -> Option<Vec<AdRef>> {
        loop {
            let attr = format!("member;range={next}-*");
            let res = self
                .op()
                .with_controls(vec![extended_dn()])
                .search(dn, Scope::Base, "(objectClass=*)", vec![attr.as_str()])
                .await;
            let (entries, _) = match res.and_then(|r| r.success()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%dn, error = %e, "ranged member read failed; the group is skipped this run");
                    return None;
                }
            };
            let e = entries.into_iter().next().map(SearchEntry::construct)?;
            let (key, values) = e.attrs.iter().find(|(k, _)| k.to_ascii_lowercase().starts_with("member;range="))?;
            members.extend(values.iter().filter_map(|v| member_ref(v)));
            let range = key.split_once('=').map(|x| x.1).unwrap_or("");
            match range.split_once('-') {
                Some((_, "*")) => return Some(members),
                Some((_, hi)) => next = hi.parse::<usize>().ok()? + 1,
                None => return None,
            }
        }
    }

    /// Looks up members anywhere in the domain by their anchors (objectSid or objectGUID).
    /// Every object found comes back under the anchor it was asked for, and under its
    /// objectSid and objectGUID, with its class: what it may stand for is the planner's rule
    /// (`writeback_core::anchor`).
    pub async fn resolve_members(&mut self, anchors: &[Anchor]) -> Result<HashMap<Anchor, AdObject>, AdError> {
        let mut out = self.resolve_here(anchors).await?;
        // Not in this domain: the Global Catalog knows the forest's other domains.
        if let Some(gc) = self.gc.as_mut() {
            let missing: Vec<Anchor> = anchors.iter().filter(|a| !out.contains_key(*a)).cloned().collect();
            if !missing.is_empty() {
                let found = gc.resolve_here(&missing).await?;
                tracing::info!(
                    asked = missing.len(),
                    found = found.len(),
                    "not in this domain: looked up in the Global Catalog"
                );
                for (anchor, obj) in found {
                    out.entry(anchor).or_insert(obj);
                }
            }
        }
        Ok(out)
    }

    async fn resolve_here(&mut self, anchors: &[Anchor]) -> Result<HashMap<Anchor, AdObject>, AdError> {
        let filters: Vec<String> = anchors
            .chunks(LOOKUP_BATCH)
            .map(|chunk| {
                chunk
                    .iter()
                    .filter_map(|a| match a {
                        Anchor::Sid(s) => naming::is_sid(s).then(|| format!("(objectSid={s})")),
                        Anchor::Guid(g) => naming::guid_to_bytes(g)
                            .map(|b| format!("(objectGUID={})", crate::ldap_text::escape_filter_bytes(&b))),
                    })
                    .collect::<String>()
            })
            .filter(|terms| !terms.is_empty())
            .map(|terms| format!("(|{terms})"))
            .collect();
        self.ops += filters.len() as u64;
        let base = self.default_nc.clone();
        let ldap = self.ldap.clone();
        // Several searches in flight on the one connection: the DC answers the next while this
        // side takes in the last (one at a time, the wait between answer and next request was
        // a third of the 100,000 lookups' time).
        let mut answers = futures_util::stream::iter(filters)
            .map(|filter| {
                let (mut ldap, base) = (ldap.clone(), base.clone());
                // Not paged: each anchor names one object at most, so a batch answers fewer
                // entries than any server's size limit, and Samba's paged search costs a second pass.
                async move {
                    ldap.with_controls(vec![extended_dn()])
                        .search(&base, Scope::Subtree, &filter, LOOKUP_ATTRS.to_vec())
                        .await
                        .and_then(|r| r.success())
                }
            })
            .buffer_unordered(RESOLVE_IN_FLIGHT);
        let mut out = HashMap::new();
        while let Some(answer) = answers.next().await {
            let (entries, _) = answer.map_err(|e| AdError::ldap("resolving members", e))?;
            for e in entries.into_iter().filter(|e| !e.is_ref()).map(SearchEntry::construct) {
                let (Some(guid), sid, dn) = parse_extended_dn(&e.dn) else {
                    continue;
                };
                let first = |k: &str| e.attrs.get(k).and_then(|v| v.first());
                let obj = AdObject {
                    guid: guid.as_str().into(),
                    sid: sid.clone(),
                    dn: dn.into(),
                    group_type: first("groupType").and_then(|s| s.parse().ok()),
                    class: classify(
                        e.attrs.get("objectClass").map(Vec::as_slice).unwrap_or_default(),
                        first("sAMAccountType").and_then(|s| s.parse().ok()),
                    ),
                    source_anchor: binary(&e, "mS-DS-ConsistencyGuid")
                        .and_then(|b| naming::guid_from_bytes(&b))
                        .map(Into::into),
                };
                if let Some(sid) = sid {
                    out.insert(Anchor::Sid(sid), obj.clone());
                }
                out.insert(Anchor::Guid(guid.into()), obj);
            }
        }
        Ok(out)
    }

    /// objectGUIDs of the owned groups directly below `parent`, by cloud id (from the marker):
    /// one search instead of one read per group just added.
    pub(crate) async fn owned_guids_below(&mut self, parent: &str) -> Result<HashMap<CloudId, ObjectGuid>, AdError> {
        let entries = self
            .search_all(
                Answer::Whole,
                parent,
                Scope::OneLevel,
                "(&(objectClass=group)(adminDescription=Group_*))",
                vec!["adminDescription".into()],
                vec![extended_dn()],
            )
            .await
            .map_err(|e| AdError::ldap(format!("reading the groups in {parent}"), e))?;
        let mut out = HashMap::new();
        for e in entries {
            let marker = e.attrs.get("adminDescription").and_then(|v| v.first());
            if let (Some(id), (Some(guid), _, _)) =
                (marker.and_then(|m| naming::parse_marker(m)), parse_extended_dn(&e.dn))
            {
                out.insert(id, guid);
            }
        }
        Ok(out)
    }

    /// The objectGUID of an entry, by DN.
    pub async fn guid_of(&mut self, dn: &str) -> Result<ObjectGuid, AdError> {
        let (entries, _) = self
            .op()
            .with_controls(vec![extended_dn()])
            .search(dn, Scope::Base, "(objectClass=*)", vec!["1.1"])
            .await
            .and_then(|r| r.success())
            .map_err(|e| AdError::ldap(format!("reading {dn}"), e))?;
        let e = entries.into_iter().next().map(SearchEntry::construct).ok_or_else(|| AdError::Ldap {
            op: format!("reading {dn}"),
            rc: 32,
            message: "not found".into(),
        })?;
        parse_extended_dn(&e.dn).0.ok_or_else(|| AdError::Ldap {
            op: format!("reading {dn}"),
            rc: 0,
            message: "no GUID in the answer".into(),
        })
    }

    /// Checks `links` (cloud id, objectGUID, from the state) against AD, one base read each:
    /// (the groups that exist and carry the marker of their cloud id, with where they are; the
    /// ids whose object exists but is not that group). Ids of objects that are gone are in
    /// neither. What the state says is checked here, never trusted.
    pub async fn check_links(
        &mut self,
        links: &[(CloudId, ObjectGuid)],
    ) -> Result<(Vec<(CloudId, ObjectGuid, Dn)>, Vec<CloudId>), AdError> {
        let (mut ours, mut not_ours) = (Vec::new(), Vec::new());
        for (id, guid) in links {
            if !naming::is_guid(guid) {
                not_ours.push(id.clone());
                continue;
            }
            match self.marker_of(guid).await? {
                Some((marker, dn)) if naming::parse_marker(&marker).as_ref() == Some(id) => {
                    ours.push((id.clone(), guid.clone(), dn.into()))
                }
                Some(_) => not_ours.push(id.clone()),
                None => {}
            }
        }
        Ok((ours, not_ours))
    }

    /// The marker and DN of an object by objectGUID, to check ownership right before a delete.
    pub async fn marker_of(&mut self, guid: &str) -> Result<Option<(String, String)>, AdError> {
        let res = self
            .op()
            .with_controls(vec![extended_dn()])
            .search(&format!("<GUID={guid}>"), Scope::Base, "(objectClass=group)", vec!["adminDescription"])
            .await
            .map_err(|e| AdError::ldap("reading an object by GUID", e))?;
        if res.1.rc == 32 {
            return Ok(None);
        }
        let (entries, _) = res.success().map_err(|e| AdError::ldap("reading an object by GUID", e))?;
        Ok(entries.into_iter().next().map(SearchEntry::construct).map(|e| {
            let marker = e.attrs.get("adminDescription").and_then(|v| v.first()).cloned().unwrap_or_default();
            (marker, parse_extended_dn(&e.dn).2)
        }))
    }
}

/// One entry per objectGUID (managed OUs may be found twice).
fn dedupe(mut groups: Vec<AdGroup>) -> Vec<AdGroup> {
    let mut seen = std::collections::HashSet::new();
    groups.retain(|g| seen.insert(g.guid.clone()));
    groups
}

fn member_ref(v: &str) -> Option<AdRef> {
    let (guid, sid, dn) = parse_extended_dn(v);
    Some(AdRef { guid: guid?, dn, sid })
}

/// Where ranged retrieval must go on, when the server ranged `member` on its own.
fn ranged_start(e: &SearchEntry) -> Option<usize> {
    let (key, _) = e.attrs.iter().find(|(k, _)| k.to_ascii_lowercase().starts_with("member;range="))?;
    let range = key.split_once('=')?.1;
    let (_, hi) = range.split_once('-')?;
    if hi == "*" {
        return None;
    }
    hi.parse::<usize>().ok().map(|h| h + 1)
}

fn first(e: &SearchEntry, k: &str) -> Option<String> {
    e.attrs.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).and_then(|(_, v)| v.first()).cloned()
}

/// An owned group: its cloud id from its marker.
fn to_group(e: &SearchEntry) -> Option<AdGroup> {
    let cloud_id = first(e, "adminDescription")
        .and_then(|m| naming::parse_marker(&m))
        .or_else(|| first(e, "msDS-ExternalDirectoryObjectId").and_then(|m| naming::parse_marker(&m)))?;
    group_from(e, cloud_id)
}

/// A group entry as the planner sees it, for `cloud_id`.
fn group_from(e: &SearchEntry, cloud_id: CloudId) -> Option<AdGroup> {
    let (guid, sid, dn) = parse_extended_dn(&e.dn);
    let first = |k: &str| first(e, k);
    let mut attrs = BTreeMap::new();
    let mut members = Vec::new();
    let mut member_of = Vec::new();
    for (k, v) in &e.attrs {
        let lower = k.to_ascii_lowercase();
        if lower == "member" || lower.starts_with("member;range=") {
            members.extend(v.iter().filter_map(|x| member_ref(x)));
        } else if lower == "memberof" {
            member_of.extend(v.iter().filter_map(|x| member_ref(x)));
        } else if lower == "admincount" {
            continue;
        } else {
            attrs.insert(lower, v.clone());
        }
    }
    Some(AdGroup {
        guid: guid?,
        sid,
        dn: dn.into(),
        cloud_id,
        cn: first("cn").unwrap_or_default(),
        group_type: first("groupType").and_then(|s| s.parse().ok()).unwrap_or(0),
        attrs,
        members: Some(members),
        member_of,
        admin_count: first("adminCount").is_some_and(|v| v.trim() == "1"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(cs: &[&str]) -> Vec<String> {
        cs.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn only_normal_user_accounts_are_users() {
        let user = classes(&["top", "person", "organizationalPerson", "user"]);
        assert_eq!(classify(&user, Some(0x3000_0000)), AdClass::User);
        // A trust account is of class user too, but not a normal account.
        assert_eq!(classify(&user, Some(0x3000_0002)), AdClass::Other);
        assert_eq!(classify(&user, None), AdClass::Other);
        let computer = classes(&["top", "person", "organizationalPerson", "user", "computer"]);
        assert_eq!(classify(&computer, Some(0x3000_0001)), AdClass::Computer);
        let gmsa = classes(&["top", "person", "user", "computer", "msDS-GroupManagedServiceAccount"]);
        assert_eq!(classify(&gmsa, Some(0x3000_0001)), AdClass::ServiceAccount);
        assert_eq!(classify(&classes(&["top", "foreignSecurityPrincipal"]), None), AdClass::ForeignPrincipal);
        assert_eq!(classify(&classes(&["top", "GROUP"]), Some(0x1000_0000)), AdClass::Group);
        assert_eq!(classify(&classes(&["top", "person", "organizationalPerson", "contact"]), None), AdClass::Other);
    }
}
