//! Applying a plan: every operation on its own, members in chunks, a failed chunk retried
//! value by value so that one bad member never holds back the others.

use std::collections::{HashMap, HashSet};

use ldap3::Mod;
use serde::Serialize;
use writeback_core::plan::{AttrChange, GroupTarget, Operation, Plan};
use writeback_core::{naming, CloudId, Dn, ObjectGuid};

use crate::{AdConn, AdError};

/// What happened to one operation.
#[derive(Clone, Debug, Serialize)]
pub struct OpOutcome {
    pub cloud_id: CloudId,
    pub op: &'static str,
    /// The whole operation failed.
    pub error: Option<String>,
    /// Members that could not be written or removed: (member DN or GUID, why).
    pub member_errors: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    pub outcomes: Vec<OpOutcome>,
    /// Groups that exist after the run: cloud id → (objectGUID, DN). A group just added has
    /// an empty objectGUID until something needs it or the run ends (`fill_guids`).
    pub links: HashMap<CloudId, (ObjectGuid, Dn)>,
    /// LDAP write operations sent.
    pub ldap_writes: u64,
    /// Set when the circuit breaker stopped the run: most operations were failing.
    pub stopped: Option<String>,
    /// Converted groups whose original was not taken over: nothing else is written to it.
    pub not_taken_over: HashSet<CloudId>,
}

/// (objectSid, (attribute, value) of each marker attribute set, DN).
type SidAndMarkers = (Option<String>, Vec<(String, String)>, String);

/// Member values written inline in a group's add; the rest follow in `member_chunk` modifies.
/// 100,000 `<GUID=…>` values are about 4.5 MB, below Windows' 10 MB MaxReceiveBuffer (Samba
/// takes 16 MB from a bound client); only groups past that (Graph allows 250,000) are filled
/// by modifies, each of which rewrites the growing group.
const INLINE_MAX: usize = 100_000;

/// The breaker trips when more than this share of operations failed…
const BREAKER_RATIO: f64 = 0.4;
/// …once at least this many were tried (a few failures among few operations is not a pattern).
const BREAKER_MIN_OPS: usize = 20;

impl ApplyReport {
    pub fn failed_ops(&self) -> usize {
        self.outcomes.iter().filter(|o| o.error.is_some()).count()
    }

    /// Each operation sent with what happened to it. Outcomes are recorded in the order the
    /// operations were sent (fewer when the breaker stopped the run); every pair is checked to
    /// name the same group and kind of operation, so a report that does not belong to `ops` is
    /// an error instead of a wrong count.
    pub fn paired<'a>(&'a self, ops: &'a [Operation]) -> Result<Vec<(&'a Operation, &'a OpOutcome)>, String> {
        if self.outcomes.len() > ops.len() {
            return Err(format!("{} outcomes were recorded for {} operations", self.outcomes.len(), ops.len()));
        }
        ops.iter()
            .zip(&self.outcomes)
            .map(|(op, out)| match out.cloud_id == *op.cloud_id() && out.op == op_name(op) {
                true => Ok((op, out)),
                false => Err(format!(
                    "the outcome of {} {} was recorded for {} {}",
                    out.op,
                    out.cloud_id,
                    op_name(op),
                    op.cloud_id()
                )),
            })
            .collect()
    }
}

fn op_name(op: &Operation) -> &'static str {
    match op {
        Operation::Add { .. } => "add",
        Operation::Update { .. } => "update",
        Operation::Rename { .. } => "rename",
        Operation::AddMembers { .. } => "add-members",
        Operation::RemoveMembers { .. } => "remove-members",
        Operation::Delete { .. } => "delete",
        Operation::Adopt { .. } => "adopt",
        Operation::Release { .. } => "release",
    }
}

/// How a member value is written: `<GUID=…>` for objects that exist (immune to renames),
/// the DN for groups created in this run.
fn member_value(t: &GroupTarget, created: &HashMap<CloudId, (ObjectGuid, Dn)>) -> Result<String, String> {
    match t {
        GroupTarget::Existing { guid, .. } => Ok(format!("<GUID={guid}>")),
        GroupTarget::New { cloud_id, .. } => match created.get(cloud_id) {
            Some((guid, _)) if !guid.is_empty() => Ok(format!("<GUID={guid}>")),
            Some((_, dn)) => Err(format!("the objectGUID of {dn}, added in this run, could not be read")),
            None => Err(format!("the group for cloud id {cloud_id} was not created in this run")),
        },
    }
}

impl AdConn {
    /// Applies the plan in order. Never writes outside `managed_ous`; never deletes an object
    /// that does not carry the marker of the cloud group it is deleted for.
    /// `progress(done, total)` is called after each operation.
    pub async fn apply(
        &mut self,
        plan: &Plan,
        managed_ous: &[String],
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> ApplyReport {
        let mut report = ApplyReport::default();
        self.apply_ops(&plan.operations, managed_ous, &mut report, progress).await;
        self.fill_guids(&mut report).await;
        report
    }

    /// `apply` in steps: operations are added to `report` (whose links name the groups
    /// added by earlier steps); `finish` reads the objectGUIDs of the groups added. Nothing
    /// is applied once the circuit breaker has stopped the run.
    pub async fn apply_ops(
        &mut self,
        operations: &[Operation],
        managed_ous: &[String],
        report: &mut ApplyReport,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) {
        if report.stopped.is_some() {
            return;
        }
        let total = report.outcomes.len() + operations.len();
        let within =
            |dn: &str| managed_ous.iter().any(|ou| naming::dn_is_within(dn, ou) && !naming::dn_is_within(ou, dn));
        for op in operations {
            if let Some(gate) = &self.gate {
                if let Err(why) = gate.check().await {
                    tracing::error!(reason = %why, "writing stopped: this instance may no longer write");
                    report.stopped = Some(why);
                    break;
                }
            }
            let mut outcome =
                OpOutcome { cloud_id: op.cloud_id().clone(), op: op_name(op), error: None, member_errors: vec![] };
            let result = match op {
                _ if report.not_taken_over.contains(op.cloud_id()) => {
                    Err("skipped: its original AD group was not taken over".to_string())
                }
                Operation::Add { dn, .. }
                | Operation::Update { dn, .. }
                | Operation::Delete { dn, .. }
                | Operation::Adopt { dn, .. }
                | Operation::Release { dn, .. }
                    if !within(dn) =>
                {
                    Err(format!("refused: {dn} is outside the managed OUs"))
                }
                Operation::Rename { new_dn, .. } if !within(new_dn) => {
                    Err(format!("refused: {new_dn} is outside the managed OUs"))
                }
                Operation::Add { cloud_id, dn, attrs, members } => {
                    self.add_group(cloud_id, dn, attrs, members, report, &mut outcome).await
                }
                Operation::Update { guid, changes, .. } => self.update(guid, changes, report).await,
                Operation::Rename { cloud_id, guid, new_rdn, new_parent, new_dn, .. } => {
                    report.ldap_writes += 1;
                    // By objectGUID, as every write to an existing group: the DN read at the start
                    // of the cycle may name another object by now. The parent is always given:
                    // Samba cannot rename a `<GUID=…>` entry in place without it (No such
                    // object), and it is where the planner wants the group anyway.
                    let entry = format!("<GUID={guid}>");
                    let parent = new_parent.as_deref().unwrap_or_else(|| naming::split_dn(new_dn).1);
                    let r = self.op().modifydn(&entry, new_rdn, true, Some(parent)).await.and_then(|r| r.success());
                    match r {
                        Ok(_) => {
                            report.links.insert(cloud_id.clone(), (guid.clone(), new_dn.as_str().into()));
                            Ok(())
                        }
                        Err(e) => Err(AdError::ldap("rename", e).to_string()),
                    }
                }
                Operation::AddMembers { group, members, .. } | Operation::RemoveMembers { group, members, .. } => {
                    let add = matches!(op, Operation::AddMembers { .. });
                    for t in std::iter::once(group).chain(members) {
                        if let GroupTarget::New { cloud_id, .. } = t {
                            self.need_guid(cloud_id, report).await;
                        }
                    }
                    match member_value(group, &report.links) {
                        Ok(target) => {
                            outcome.member_errors = self.write_members(&target, members, add, report).await;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Operation::Delete { cloud_id, guid, .. } => self.delete_owned(cloud_id, guid, &within, report).await,
                Operation::Adopt { cloud_id, guid, sid, marker, .. } => {
                    let taken = self.adopt(cloud_id, guid, sid, marker, report).await;
                    if taken.is_err() {
                        report.not_taken_over.insert(cloud_id.clone());
                    }
                    taken
                }
                Operation::Release { cloud_id, guid, marker, .. } => self.release(cloud_id, guid, marker, report).await,
            };
            outcome.error = result.err();
            if let Some(e) = &outcome.error {
                tracing::warn!(cloud_id = %outcome.cloud_id, op = outcome.op, error = %e, "operation failed");
            }
            report.outcomes.push(outcome);
            progress(report.outcomes.len(), total);
            if report.stopped.is_some() {
                // The lead was lost within the operation: nothing more.
                break;
            }
            let (done, failed) = (report.outcomes.len(), report.failed_ops());
            if done >= BREAKER_MIN_OPS && failed as f64 > BREAKER_RATIO * done as f64 {
                report.stopped = Some(format!(
                    "{failed} of the first {done} operations failed (over {:.0}%): writing \
                        stopped with {} operations left; see `writeback errors`",
                    BREAKER_RATIO * 100.0,
                    total - done
                ));
                tracing::error!(failed, done, "most operations are failing: stopping writes (quarantine)");
                break;
            }
        }
    }

    /// The end of an `apply_ops` run: the objectGUIDs of the groups it added.
    pub async fn finish(&mut self, report: &mut ApplyReport) {
        self.fill_guids(report).await;
    }

    /// The objectGUID of a group this run added, read now because an operation names it.
    async fn need_guid(&mut self, cloud_id: &str, report: &mut ApplyReport) {
        let Some((guid, dn)) = report.links.get(cloud_id).filter(|(g, _)| g.is_empty()).cloned() else { return };
        debug_assert!(guid.is_empty());
        match self.guid_of(&dn).await {
            Ok(g) => {
                report.links.insert(cloud_id.into(), (g, dn));
            }
            Err(e) => tracing::warn!(%dn, error = %e, "cannot read the objectGUID of a group just added"),
        }
    }

    /// The objectGUIDs of the groups added without reading them back: one search per
    /// OU they were added to. Groups not found that way (moved away meanwhile) are dropped from
    /// the links; the next cycle finds them by their marker.
    async fn fill_guids(&mut self, report: &mut ApplyReport) {
        let mut parents: Vec<String> = report
            .links
            .values()
            .filter(|(g, _)| g.is_empty())
            .map(|(_, dn)| naming::split_dn(dn).1.to_string())
            .collect();
        parents.sort();
        parents.dedup();
        for parent in parents {
            match self.owned_guids_below(&parent).await {
                Ok(found) => {
                    for (id, (guid, _)) in report.links.iter_mut().filter(|(_, (g, _))| g.is_empty()) {
                        if let Some(g) = found.get(id) {
                            *guid = g.clone();
                        }
                    }
                }
                Err(e) => tracing::warn!(%parent, error = %e, "cannot read back the groups just added"),
            }
        }
        report.links.retain(|id, (g, _)| {
            if g.is_empty() {
                tracing::warn!(cloud_id = %id, "a group just added was not found again; the next cycle looks for it by \
                    its marker");
            }
            !g.is_empty()
        });
    }

    async fn add_group(
        &mut self,
        cloud_id: &str,
        dn: &str,
        attrs: &[(String, Vec<String>)],
        members: &[GroupTarget],
        report: &mut ApplyReport,
        outcome: &mut OpOutcome,
    ) -> Result<(), String> {
        let mut entry: Vec<(String, HashSet<String>)> = attrs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
            .collect();
        let values: Vec<String> = members.iter().filter_map(|m| member_value(m, &report.links).ok()).collect();
        // Members go inline, up to INLINE_MAX: for 20,000 members one inline add took Samba ~11 s,
        // while a run that filled the empty group 500 values per modify took 29 s (each modify
        // rewrites the whole group).
        let inline_set: HashSet<String> = values.iter().take(INLINE_MAX).cloned().collect();
        let inline = !inline_set.is_empty();
        let rest: Vec<GroupTarget> = members
            .iter()
            .filter(|m| member_value(m, &report.links).map_or(true, |v| !inline_set.contains(&v)))
            .cloned()
            .collect();
        if inline {
            entry.push(("member".into(), inline_set));
        }
        self.may_write()?;
        report.ldap_writes += 1;
        let mut res = self.op().add(dn, entry.clone()).await.and_then(|r| r.success());
        if res.is_err() && inline {
            // A bad member must not stop the group: add it empty, then members one by one.
            if let Err(ldap3::LdapError::LdapResult { result }) = &res {
                if result.rc != 68 {
                    entry.retain(|(k, _)| k != "member");
                    self.may_write()?;
                    report.ldap_writes += 1;
                    res = self.op().add(dn, entry).await.and_then(|r| r.success());
                }
            }
            if res.is_ok() {
                let guid = self.guid_of(dn).await.map_err(|e| e.to_string())?;
                report.links.insert(cloud_id.into(), (guid.clone(), dn.into()));
                outcome.member_errors = self.write_members(&format!("<GUID={guid}>"), members, true, report).await;
                return Ok(());
            }
        }
        match res {
            Ok(_) if !rest.is_empty() => {
                let guid = self.guid_of(dn).await.map_err(|e| e.to_string())?;
                report.links.insert(cloud_id.into(), (guid.clone(), dn.into()));
                outcome.member_errors = self.write_members(&format!("<GUID={guid}>"), &rest, true, report).await;
                Ok(())
            }
            Ok(_) => {
                // Read back with the others at the end of the run, not one by one.
                report.links.insert(cloud_id.into(), (ObjectGuid::default(), dn.into()));
                Ok(())
            }
            // 68 is either the DN or the domain-wide sAMAccountName (AD's text tells which).
            // Windows says ERROR_USER_EXISTS; Samba names the attribute.
            Err(ldap3::LdapError::LdapResult { result })
                if result.rc == 68
                    && (crate::win32_code(&result.text) == Some(crate::WIN32_ACCOUNT_EXISTS)
                        || result.text.to_ascii_lowercase().contains("samaccountname")) =>
            {
                let sam = attrs
                    .iter()
                    .find(|(k, _)| k == "sAMAccountName")
                    .and_then(|(_, v)| v.first())
                    .cloned()
                    .unwrap_or_default();
                Err(format!(
                    "the sAMAccountName {sam} is already used by another object in the \
                        domain (sAMAccountName is unique domain-wide); rename that object, or \
                        remove it if it is a leftover"
                ))
            }
            Err(ldap3::LdapError::LdapResult { result }) if result.rc == 68 => Err(format!(
                "{dn} already exists and writeback does not own it (it has no marker \
                    {}); rename or remove that object, or set its adminDescription to the \
                    marker to let writeback adopt it",
                naming::marker(cloud_id)
            )),
            Err(e) => Err(AdError::ldap("add", e).to_string()),
        }
    }

    async fn update(&mut self, guid: &str, changes: &[AttrChange], report: &mut ApplyReport) -> Result<(), String> {
        let mods: Vec<Mod<String>> =
            changes.iter().map(|c| Mod::Replace(c.attr.clone(), c.values.iter().cloned().collect())).collect();
        self.modify_by_guid(guid, mods, "update", report).await
    }

    /// One modify of an existing group, by objectGUID (as every write to one: the DN read at
    /// the start of the cycle may name another object by now).
    async fn modify_by_guid(
        &mut self,
        guid: &str,
        mods: Vec<Mod<String>>,
        what: &str,
        report: &mut ApplyReport,
    ) -> Result<(), String> {
        self.may_write()?;
        report.ldap_writes += 1;
        self.op()
            .modify(&format!("<GUID={guid}>"), mods)
            .await
            .and_then(|r| r.success())
            .map(|_| ())
            .map_err(|e| AdError::ldap(what, e).to_string())
    }

    /// Adds or removes member values in chunks; a failed chunk is retried value by value.
    /// Values already in the wanted state count as done. Returns the values that failed.
    async fn write_members(
        &mut self,
        target: &str,
        members: &[GroupTarget],
        add: bool,
        report: &mut ApplyReport,
    ) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let mut values = Vec::new();
        for m in members {
            match member_value(m, &report.links) {
                Ok(v) => values.push((v, m.dn().to_string())),
                Err(e) => errors.push((m.dn().to_string(), e)),
            }
        }
        let chunk = self.member_chunk;
        for part in values.chunks(chunk) {
            if let Err(why) = self.may_write() {
                report.stopped = Some(why.clone());
                errors.extend(part.iter().map(|(_, dn)| (dn.clone(), format!("not written: {why}"))));
                continue;
            }
            let set: HashSet<String> = part.iter().map(|(v, _)| v.clone()).collect();
            let m = if add { Mod::Add("member".to_string(), set) } else { Mod::Delete("member".to_string(), set) };
            report.ldap_writes += 1;
            if self.op().modify(target, vec![m]).await.and_then(|r| r.success()).is_ok() {
                continue;
            }
            for (v, dn) in part {
                if let Err(why) = self.may_write() {
                    report.stopped = Some(why.clone());
                    errors.push((dn.clone(), format!("not written: {why}")));
                    continue;
                }
                let set: HashSet<String> = [v.clone()].into();
                let m = if add { Mod::Add("member".to_string(), set) } else { Mod::Delete("member".to_string(), set) };
                report.ldap_writes += 1;
                match self.op().modify(target, vec![m]).await.and_then(|r| r.success()) {
                    Ok(_) => {}
                    Err(ldap3::LdapError::LdapResult { result }) if already_done(add, result.rc, &result.text) => {}
                    Err(e) => errors.push((
                        dn.clone(),
                        AdError::ldap(if add { "member add" } else { "member removal" }, e).to_string(),
                    )),
                }
            }
        }
        errors
    }

    /// Takes over a converted group's original: AD is asked again that the object is the group
    /// with `sid` and carries no marker but ours, then the marker is stamped.
    async fn adopt(
        &mut self,
        cloud_id: &CloudId,
        guid: &ObjectGuid,
        sid: &str,
        marker: &[(String, Vec<String>)],
        report: &mut ApplyReport,
    ) -> Result<(), String> {
        let (found_sid, markers, dn) = self.sid_and_markers(guid).await?.ok_or("its AD group is gone")?;
        if !found_sid.is_some_and(|s| s.eq_ignore_ascii_case(sid)) {
            return Err(format!("refused: the object {dn} no longer has the SID {sid}"));
        }
        let ours = naming::marker(cloud_id);
        if let Some((attr, other)) = markers.iter().find(|(_, v)| !v.eq_ignore_ascii_case(&ours)) {
            return Err(format!("refused: {dn} carries {attr} {other:?} by now; it is not taken over"));
        }
        // An add, not a replace: if another writer stamps the attribute meanwhile, AD refuses
        // (it is single-valued) instead of this overwriting it.
        let mods: Vec<Mod<String>> = marker
            .iter()
            .filter(|(attr, _)| !markers.iter().any(|(a, _)| a.eq_ignore_ascii_case(attr)))
            .map(|(attr, values)| Mod::Add(attr.clone(), values.iter().cloned().collect()))
            .collect();
        if !mods.is_empty() {
            self.modify_by_guid(guid, mods, "adopt", report).await?;
        }
        report.links.insert(cloud_id.clone(), (guid.clone(), dn.as_str().into()));
        Ok(())
    }

    /// Gives a group back: our marker values are deleted (by value: one changed meanwhile is
    /// not ours to remove); the group and its members stay.
    async fn release(
        &mut self,
        cloud_id: &CloudId,
        guid: &ObjectGuid,
        marker: &[String],
        report: &mut ApplyReport,
    ) -> Result<(), String> {
        let Some((_, markers, dn)) = self.sid_and_markers(guid).await? else { return Ok(()) };
        let ours = naming::marker(cloud_id);
        // Each attribute's value as AD holds it, when it is our marker: deleted by that value.
        let mine: Vec<&(String, String)> = markers
            .iter()
            .filter(|(a, v)| v.eq_ignore_ascii_case(&ours) && marker.iter().any(|m| m.eq_ignore_ascii_case(a)))
            .collect();
        if !mine.iter().any(|(a, _)| a.eq_ignore_ascii_case("adminDescription")) {
            return Err(format!("refused to release {dn}: its adminDescription is no longer the marker {ours}"));
        }
        let mods: Vec<Mod<String>> =
            mine.iter().map(|(attr, value)| Mod::Delete(attr.clone(), HashSet::from([value.clone()]))).collect();
        self.modify_by_guid(guid, mods, "release", report).await
    }

    /// An object's objectSid, its marker attributes with their values (adminDescription and the
    /// 2016 anchor) and DN, by objectGUID; `None` when it is gone.
    async fn sid_and_markers(&mut self, guid: &str) -> Result<Option<SidAndMarkers>, String> {
        let mut attrs = vec!["adminDescription"];
        if self.schema.external_directory_object_id {
            attrs.push("msDS-ExternalDirectoryObjectId");
        }
        let res = self
            .op()
            .with_controls(vec![crate::read::extended_dn()])
            .search(&format!("<GUID={guid}>"), ldap3::Scope::Base, "(objectClass=group)", attrs)
            .await
            .map_err(|e| AdError::ldap("reading a group by GUID", e).to_string())?;
        if res.1.rc == 32 {
            return Ok(None);
        }
        let (entries, _) = res.success().map_err(|e| AdError::ldap("reading a group by GUID", e).to_string())?;
        Ok(entries.into_iter().next().map(ldap3::SearchEntry::construct).map(|e| {
            let (_, sid, dn) = crate::parse_extended_dn(&e.dn);
            let markers = e.attrs.into_iter().flat_map(|(a, vs)| vs.into_iter().map(move |v| (a.clone(), v))).collect();
            (sid, markers, dn)
        }))
    }

    async fn delete_owned(
        &mut self,
        cloud_id: &str,
        guid: &str,
        within: &impl Fn(&str) -> bool,
        report: &mut ApplyReport,
    ) -> Result<(), String> {
        match self.marker_of(guid).await.map_err(|e| e.to_string())? {
            None => Ok(()), // already gone
            Some((marker, dn)) => {
                if naming::parse_marker(&marker).as_deref() != Some(cloud_id) || !within(&dn) {
                    return Err(format!(
                        "refused to delete {dn}: it no longer carries the marker {} inside the managed OUs",
                        naming::marker(cloud_id)
                    ));
                }
                self.may_write()?;
                report.ldap_writes += 1;
                self.op()
                    .delete(&format!("<GUID={guid}>"))
                    .await
                    .and_then(|r| r.success())
                    .map(|_| ())
                    .map_err(|e| AdError::ldap("delete", e).to_string())
            }
        }
    }
}

/// AD's ways of saying a member value is already as wanted (Samba and Windows differ):
/// Windows names it by its Win32 code (0x562 ERROR_MEMBER_IN_ALIAS on an add, 0x561
/// ERROR_MEMBER_NOT_IN_ALIAS on a removal), Samba by its words.
fn already_done(add: bool, rc: u32, text: &str) -> bool {
    let code = crate::win32_code(text);
    if add {
        rc == 68 || rc == 20 || code == Some(0x562)
    } else {
        rc == 16
            || code == Some(0x561)
            || (rc == 53 && (text.contains("doesn't exist") || text.contains("already deleted")))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_member_already_as_wanted_is_known_in_windows_and_samba_words() {
        use super::already_done;
        assert!(already_done(true, 68, "00000562: UpdErr: DSID-031A11C4, problem 6005 (ENTRY_EXISTS), data 0"));
        assert!(already_done(false, 53, "00000561: SvcErr: DSID-031A124C, problem 5003 (WILL_NOT_PERFORM), data 0"));
        assert!(already_done(false, 53, "Attribute member doesn't exist for target GUID x"));
        assert!(!already_done(false, 53, "00002146: SvcErr: DSID-031A1236, problem 5003 (WILL_NOT_PERFORM)"));
    }
}
