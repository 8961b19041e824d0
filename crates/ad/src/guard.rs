//! The Tier-0 guard: which owned groups sit, directly or through other groups, inside a
//! protected group (`adminCount=1`; the domain's privileged groups, Key Admins and DnsAdmins
//! among them; Schema, Enterprise and Enterprise Key Admins of the forest root domain; the
//! builtin operators). Cloud group owners must not become domain admins through a nesting
//! someone made in AD.
//!
//! The walk goes up from our groups' `memberOf` (read with the groups), one base read per
//! ancestor, each read once per cycle. A group nested nowhere costs nothing, and no search
//! scans the directory: a domain-wide `LDAP_MATCHING_RULE_IN_CHAIN` search per protected group
//! costs a full scan on Samba, which grows with every tombstone.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use ldap3::{Scope, SearchEntry};
use writeback_core::{naming, AdGroup, AdRef, CloudId, Dn, ObjectGuid};

use crate::read::extended_dn;
use crate::{parse_extended_dn, AdConn, AdError};

/// Relative ids of the privileged groups of every domain (MS-ADTS 6.1.1.6, MS-DTYP 2.4.2.4):
/// Domain Admins, Domain Controllers, Cert Publishers, Group Policy Creator Owners, Read-only
/// Domain Controllers, Key Admins.
const DOMAIN_RIDS: &[u32] = &[512, 516, 517, 520, 521, 526];
/// …and of the forest root domain only: Enterprise Read-only Domain Controllers, Schema Admins,
/// Enterprise Admins, Enterprise Key Admins. Their SIDs carry the root domain's SID, not the
/// connected domain's.
const ROOT_RIDS: &[u32] = &[498, 518, 519, 527];
/// Privileged groups without a fixed RID, by their sAMAccountName in the connected domain.
const NAMED: &[&str] = &["DnsAdmins"];
/// Builtin privileged groups: Administrators, Account/Server/Print/Backup Operators, Replicator.
const BUILTIN_SIDS: &[&str] =
    &["S-1-5-32-544", "S-1-5-32-548", "S-1-5-32-549", "S-1-5-32-550", "S-1-5-32-551", "S-1-5-32-552"];
/// How far up a chain of nestings the walk goes; deeper chains are held back, not trusted.
const MAX_DEPTH: usize = 12;
/// Ancestors read per cycle at most; beyond this the remaining groups are held back.
const MAX_READS: usize = 5_000;

/// A group above one of ours, as read once per cycle.
struct Ancestor {
    dn: String,
    /// Why it is protected, if it is.
    protected: Option<&'static str>,
    parents: Vec<AdRef>,
}

/// The SIDs the guard protects, and how it tells a protected group.
struct Protected {
    sids: HashSet<String>,
    /// The connected domain's SID: with the forest root's unknown, a group of another domain
    /// counts as protected (the guard fails closed).
    domain: String,
    root_known: bool,
    /// False when the groups without a fixed RID (DnsAdmins) could not be looked up: then any
    /// group above ours might be one of them, and counts as protected.
    named_known: bool,
}

impl Protected {
    /// The SIDs of the privileged groups, from the domain's SID, the forest root's (if read)
    /// and those of the groups found by name (if looked up).
    fn new(domain: String, root: Option<&str>, named: Option<Vec<String>>, forest: &[String]) -> Protected {
        let mut sids: HashSet<String> = BUILTIN_SIDS.iter().map(|s| s.to_string()).collect();
        // Every domain's own privileged groups: a nesting into another domain's Domain Admins is
        // as bad as into ours (seen through the Global Catalog).
        for d in std::iter::once(&domain).chain(forest) {
            sids.extend(DOMAIN_RIDS.iter().map(|r| format!("{d}-{r}")));
        }
        if let Some(root) = root {
            sids.extend(ROOT_RIDS.iter().map(|r| format!("{root}-{r}")));
        }
        let named_known = named.is_some();
        sids.extend(named.into_iter().flatten());
        Protected { sids, domain, root_known: root.is_some(), named_known }
    }

    fn why(&self, sid: &str) -> Option<&'static str> {
        if self.sids.contains(sid) {
            Some("a privileged group of the domain or forest")
        } else if !self.named_known {
            Some("a group above it, and the domain's DnsAdmins group could not be looked up")
        } else if !self.root_known && !sid.starts_with(&format!("{}-", self.domain)) && !sid.starts_with("S-1-5-32-") {
            Some("a group of another domain, and the forest root's privileged groups could not be identified")
        } else {
            None
        }
    }
}

impl AdConn {
    pub(crate) async fn domain_sid(&mut self) -> Result<String, AdError> {
        let base = self.default_nc.clone();
        let (entries, _) = self
            .op()
            .search(&base, Scope::Base, "(objectClass=*)", vec!["objectSid"])
            .await
            .and_then(|r| r.success())
            .map_err(|e| AdError::ldap("reading the domain SID", e))?;
        let e = entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .ok_or_else(|| AdError::Connect("no domain object".into()))?;
        object_sid(&e).ok_or_else(|| AdError::Connect("the domain has no readable objectSid".into()))
    }

    /// The forest root domain's SID: the connected domain's when it is the root, else from the
    /// root's crossRef in the configuration partition (its `nCName` read with the extended DN
    /// control carries the SID; a DC holds no other domain's partition). `None` if unreadable.
    async fn root_domain_sid(&mut self, domain: &str) -> Option<String> {
        let dse = self.root_dse(vec!["rootDomainNamingContext", "configurationNamingContext"]).await.ok()?;
        let first = |k: &str| dse.attrs.get(k).and_then(|v| v.first()).cloned();
        let root = first("rootDomainNamingContext")?;
        if Dn::new(root.as_str()) == *self.default_nc {
            return Some(domain.to_string());
        }
        let partitions = format!("CN=Partitions,{}", first("configurationNamingContext")?);
        let filter = format!("(&(objectClass=crossRef)(nCName={}))", crate::ldap_text::escape_filter(&root));
        let (entries, _) = self
            .op()
            .with_controls(vec![extended_dn()])
            .search(&partitions, Scope::OneLevel, &filter, vec!["nCName"])
            .await
            .and_then(|r| r.success())
            .ok()?;
        let e = entries.into_iter().next().map(SearchEntry::construct)?;
        e.attrs.get("nCName").and_then(|v| v.first()).and_then(|v| parse_extended_dn(v).1)
    }

    /// The SIDs of the privileged groups without a fixed RID (DnsAdmins), by name; `None` when
    /// the search failed (the guard then fails closed).
    async fn named_sids(&mut self) -> Option<Vec<String>> {
        let base = self.default_nc.clone();
        let terms: String = NAMED.iter().map(|n| format!("(sAMAccountName={n})")).collect();
        let filter = format!("(&(objectClass=group)(|{terms}))");
        let res =
            self.op().with_controls(vec![extended_dn()]).search(&base, Scope::Subtree, &filter, vec!["1.1"]).await;
        match res.and_then(|r| r.success()) {
            Ok((entries, _)) => Some(
                entries
                    .into_iter()
                    .filter(|e| !e.is_ref())
                    .map(SearchEntry::construct)
                    .filter_map(|e| parse_extended_dn(&e.dn).1)
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up DnsAdmins: every group above an owned group counts as \
                    protected this cycle");
                None
            }
        }
    }

    async fn protected_sids(&mut self) -> Result<Protected, AdError> {
        let domain = self.domain_sid().await?;
        let root = self.root_domain_sid(&domain).await;
        if root.is_none() {
            tracing::warn!(
                "the forest root domain's SID could not be read: groups of other domains \
                above owned groups are treated as protected"
            );
        }
        let named = self.named_sids().await;
        Ok(Protected::new(domain, root.as_deref(), named, &self.forest_domains))
    }

    /// Owned groups nested into a protected group: cloud id → the reason, with the path.
    /// A group whose ancestors cannot be read is held back too: the guard fails closed.
    pub async fn protected_nesting(&mut self, owned: &[AdGroup]) -> Result<BTreeMap<CloudId, String>, AdError> {
        let mut guarded = BTreeMap::new();
        for g in owned.iter().filter(|g| g.admin_count) {
            guarded
                .insert(g.cloud_id.clone(), format!("{} has adminCount = 1: AD treats it as a protected group", g.dn));
        }
        let nested: Vec<&AdGroup> =
            owned.iter().filter(|g| !g.member_of.is_empty() && !guarded.contains_key(&g.cloud_id)).collect();
        if nested.is_empty() {
            return Ok(guarded);
        }
        let protected_sids = self.protected_sids().await?;
        let mut known: HashMap<ObjectGuid, Result<Ancestor, String>> = HashMap::new();
        for g in nested {
            if let Some(reason) = self.walk_up(g, &protected_sids, &mut known).await {
                guarded.insert(g.cloud_id.clone(), reason);
            }
        }
        Ok(guarded)
    }

    /// Breadth first up from `g`: the first protected ancestor, as the guard's reason.
    async fn walk_up(
        &mut self,
        g: &AdGroup,
        protected_sids: &Protected,
        known: &mut HashMap<ObjectGuid, Result<Ancestor, String>>,
    ) -> Option<String> {
        let mut queue: VecDeque<(AdRef, Vec<String>)> =
            g.member_of.iter().map(|p| (p.clone(), vec![g.dn.to_string()])).collect();
        let mut seen: HashSet<ObjectGuid> = HashSet::from([g.guid.clone()]);
        while let Some((node, mut path)) = queue.pop_front() {
            if !seen.insert(node.guid.clone()) {
                continue;
            }
            if path.len() > MAX_DEPTH {
                return Some(format!(
                    "nested more than {MAX_DEPTH} levels deep ({}): not followed further",
                    chain(&path)
                ));
            }
            if !known.contains_key(&node.guid) {
                if known.len() >= MAX_READS {
                    return Some(format!("more than {MAX_READS} groups above the owned groups: not followed further"));
                }
                let mut read = self.read_ancestor(&node, protected_sids).await;
                // A group of another domain is not on this DC: the Global Catalog has it.
                if let (Err(_), Some(gc)) = (&read, self.gc.as_mut()) {
                    read = gc.read_ancestor(&node, protected_sids).await;
                }
                known.insert(node.guid.clone(), read);
            }
            match known.get(&node.guid)? {
                Err(e) => return Some(format!("its parent group {} could not be read ({e})", node.dn)),
                Ok(a) => {
                    path.push(a.dn.clone());
                    if let Some(why) = a.protected {
                        return Some(format!("nested into the protected group {} ({why}): {}", a.dn, chain(&path)));
                    }
                    queue.extend(a.parents.iter().map(|p| (p.clone(), path.clone())));
                }
            }
        }
        None
    }

    async fn read_ancestor(&mut self, node: &AdRef, protected_sids: &Protected) -> Result<Ancestor, String> {
        let base = format!("<GUID={}>", node.guid);
        let (entries, _) = self
            .op()
            .with_controls(vec![extended_dn()])
            .search(&base, Scope::Base, "(objectClass=*)", vec!["objectSid", "adminCount", "memberOf"])
            .await
            .and_then(|r| r.success())
            .map_err(|e| e.to_string())?;
        let e = entries.into_iter().next().map(SearchEntry::construct).ok_or("not found")?;
        let sid = parse_extended_dn(&e.dn).1.or_else(|| object_sid(&e));
        let admin_count = e.attrs.get("adminCount").and_then(|v| v.first()).is_some_and(|v| v.trim() == "1");
        let protected = if let Some(why) = sid.as_deref().and_then(|s| protected_sids.why(s)) {
            Some(why)
        } else if admin_count {
            Some("adminCount = 1")
        } else {
            None
        };
        let parents = e
            .attrs
            .get("memberOf")
            .map(|vals| {
                vals.iter()
                    .filter_map(|v| {
                        let (guid, sid, dn) = parse_extended_dn(v);
                        Some(AdRef { guid: guid?, dn, sid })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Ancestor { dn: parse_extended_dn(&e.dn).2, protected, parents })
    }
}

fn object_sid(e: &SearchEntry) -> Option<String> {
    let bytes = e
        .bin_attrs
        .get("objectSid")
        .and_then(|v| v.first())
        .cloned()
        .or_else(|| e.attrs.get("objectSid").and_then(|v| v.first()).map(|s| s.as_bytes().to_vec()));
    bytes.as_deref().and_then(crate::ldap_text::sid_from_bytes)
}

/// "A → B → C" by the groups' common names.
fn chain(path: &[String]) -> String {
    path.iter().map(|dn| naming::split_dn(dn).0).collect::<Vec<_>>().join(" → ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "S-1-5-21-1-2-3";
    const ROOT: &str = "S-1-5-21-7-8-9";

    #[test]
    fn the_forest_roots_groups_carry_the_roots_sid() {
        let dns_admins = format!("{DOMAIN}-1101");
        let p = Protected::new(DOMAIN.into(), Some(ROOT), Some(vec![dns_admins.clone()]), &[]);
        for protected in [
            format!("{DOMAIN}-512"),
            format!("{DOMAIN}-526"),
            format!("{ROOT}-519"),
            format!("{ROOT}-518"),
            format!("{ROOT}-527"),
            dns_admins,
            "S-1-5-32-544".into(),
        ] {
            assert!(p.why(&protected).is_some(), "{protected}");
        }
        // Schema and Enterprise Admins exist only in the root domain: a child domain's RID 519 is nothing.
        for ordinary in
            [format!("{DOMAIN}-519"), format!("{DOMAIN}-1105"), format!("{ROOT}-512"), "S-1-5-32-555".into()]
        {
            assert!(p.why(&ordinary).is_none(), "{ordinary}");
        }
    }

    #[test]
    fn the_guard_fails_closed_when_it_cannot_tell() {
        let no_root = Protected::new(DOMAIN.into(), None, Some(vec![]), &[]);
        assert!(no_root.why(&format!("{DOMAIN}-1105")).is_none(), "an ordinary group of the domain");
        assert!(no_root.why(&format!("{ROOT}-519")).is_some(), "maybe Enterprise Admins of an unknown root");
        let no_names = Protected::new(DOMAIN.into(), Some(DOMAIN), None, &[]);
        assert!(no_names.why(&format!("{DOMAIN}-1105")).is_some(), "maybe DnsAdmins");
    }

    #[test]
    fn every_forest_domains_privileged_groups_are_protected() {
        let sibling = "S-1-5-21-4-5-6";
        let p = Protected::new(DOMAIN.into(), Some(ROOT), Some(vec![]), &[ROOT.into(), sibling.into()]);
        for protected in [format!("{sibling}-512"), format!("{ROOT}-512"), format!("{sibling}-526")] {
            assert!(p.why(&protected).is_some(), "{protected}");
        }
        assert!(p.why(&format!("{sibling}-1105")).is_none(), "an ordinary group of another domain");
    }
}
