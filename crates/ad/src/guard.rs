//! The Tier-0 guard: which owned groups sit, directly or through other groups, inside a
//! protected group (`adminCount=1`, or the domain's well-known privileged groups). Cloud group
//! owners must not become domain admins through a nesting someone made in AD.

use std::collections::{BTreeMap, HashSet, VecDeque};

use ldap3::adapters::PagedResults;
use ldap3::{Scope, SearchEntry};
use writeback_core::naming;

use crate::{parse_extended_dn, AdConn, AdError};

/// Domain-relative RIDs of privileged groups: Domain Admins, Domain Controllers, Schema
/// Admins, Enterprise Admins, Cert Publishers… (MS-ADTS; facts-performance-security C5).
const DOMAIN_RIDS: &[u32] = &[498, 512, 516, 517, 518, 519, 520, 521];
/// Builtin privileged groups: Administrators, Account/Server/Print/Backup Operators, Replicator.
const BUILTIN_SIDS: &[&str] =
    &["S-1-5-32-544", "S-1-5-32-548", "S-1-5-32-549", "S-1-5-32-550", "S-1-5-32-551", "S-1-5-32-552"];
/// How far up the memberOf chain a path is traced for the message.
const MAX_DEPTH: usize = 12;

impl AdConn {
    async fn domain_sid(&mut self) -> Result<String, AdError> {
        let base = self.default_nc.clone();
        let (entries, _) = self
            .ldap
            .search(&base, Scope::Base, "(objectClass=*)", vec!["objectSid"])
            .await
            .and_then(|r| r.success())
            .map_err(|e| AdError::ldap("reading the domain SID", e))?;
        let e = entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .ok_or_else(|| AdError::Connect("no domain object".into()))?;
        let bytes = e
            .bin_attrs
            .get("objectSid")
            .and_then(|v| v.first())
            .cloned()
            .or_else(|| e.attrs.get("objectSid").and_then(|v| v.first()).map(|s| s.as_bytes().to_vec()));
        bytes
            .as_deref()
            .and_then(naming::sid_from_bytes)
            .ok_or_else(|| AdError::Connect("the domain has no readable objectSid".into()))
    }

    /// Owned groups in `ous` nested into a protected group: cloud id → the path, for the error.
    /// With `only`, just those cloud ids are looked at (nothing to look at: no search at all).
    pub async fn protected_nesting(
        &mut self,
        ous: &[String],
        only: Option<&[String]>,
    ) -> Result<BTreeMap<String, String>, AdError> {
        if only.is_some_and(|ids| ids.is_empty()) {
            return Ok(BTreeMap::new());
        }
        // Markers of the groups to look at, as a filter term (empty: all owned groups).
        let only_filter: String = match only {
            Some(ids) => {
                let terms: String = ids
                    .iter()
                    .filter(|id| naming::is_guid(id))
                    .map(|id| format!("(adminDescription={})", naming::escape_filter(&naming::marker(id))))
                    .collect();
                format!("(|{terms})")
            }
            None => String::new(),
        };
        let domain = self.domain_sid().await?;
        let sids: String = BUILTIN_SIDS
            .iter()
            .map(|s| s.to_string())
            .chain(DOMAIN_RIDS.iter().map(|r| format!("{domain}-{r}")))
            .map(|s| format!("(objectSid={s})"))
            .collect();
        let filter = format!("(&(objectClass=group)(|(adminCount=1){sids}))");
        let base = self.default_nc.clone();
        let mut stream = self
            .ldap
            .streaming_search_with(PagedResults::new(500), &base, Scope::Subtree, &filter, vec!["adminDescription"])
            .await
            .map_err(|e| AdError::ldap("searching protected groups", e))?;
        let mut protected = Vec::new();
        let mut guarded = BTreeMap::new();
        while let Some(entry) = stream.next().await.map_err(|e| AdError::ldap("searching protected groups", e))? {
            if entry.is_ref() || entry.is_intermediate() {
                continue;
            }
            let e = SearchEntry::construct(entry);
            match e.attrs.get("adminDescription").and_then(|v| v.first()).and_then(|m| naming::parse_marker(m)) {
                // One of ours is itself marked protected by AD (SDProp sets adminCount).
                Some(id) => {
                    guarded.insert(id, format!("{} has adminCount = 1: AD treats it as a protected group", e.dn));
                }
                None => protected.push(e.dn),
            }
        }
        stream.finish().await.success().map_err(|e| AdError::ldap("searching protected groups", e))?;

        for p in &protected {
            for ou in ous {
                let filter = format!(
                    "(&(objectClass=group)(adminDescription=Group_*){only_filter}(memberOf:1.2.840.113556.1.4.1941:={}))",
                    naming::escape_filter(p)
                );
                let res = self
                    .ldap
                    .search(ou, Scope::Subtree, &filter, vec!["adminDescription"])
                    .await
                    .and_then(|r| r.success());
                let Ok((entries, _)) = res else { continue };
                for entry in entries.into_iter().filter(|e| !e.is_ref()) {
                    let e = SearchEntry::construct(entry);
                    let Some(id) =
                        e.attrs.get("adminDescription").and_then(|v| v.first()).and_then(|m| naming::parse_marker(m))
                    else {
                        continue;
                    };
                    if guarded.contains_key(&id) {
                        continue;
                    }
                    let path = self.path_up(&e.dn, p).await.unwrap_or_else(|| format!("{} → … → {p}", e.dn));
                    guarded.insert(id, format!("nested into the protected group {p}: {path}"));
                }
            }
        }
        Ok(guarded)
    }

    /// The memberOf chain from `from` up to `to`, as "A → B → C" (breadth first, bounded).
    async fn path_up(&mut self, from: &str, to: &str) -> Option<String> {
        let target = naming::normalize_dn(to);
        let mut queue = VecDeque::from([vec![from.to_string()]]);
        let mut seen = HashSet::from([naming::normalize_dn(from)]);
        while let Some(path) = queue.pop_front() {
            if path.len() > MAX_DEPTH {
                break;
            }
            let last = path.last()?.clone();
            let (entries, _) =
                self.ldap.search(&last, Scope::Base, "(objectClass=*)", vec!["memberOf"]).await.ok()?.success().ok()?;
            let parents =
                entries.into_iter().next().map(SearchEntry::construct)?.attrs.remove("memberOf").unwrap_or_default();
            for parent in parents {
                let parent = parse_extended_dn(&parent).2;
                let mut next = path.clone();
                next.push(parent.clone());
                if naming::normalize_dn(&parent) == target {
                    let names: Vec<&str> = next.iter().map(|dn| naming::split_dn(dn).0).collect();
                    return Some(names.join(" → "));
                }
                if seen.insert(naming::normalize_dn(&parent)) {
                    queue.push_back(next);
                }
            }
        }
        None
    }
}
