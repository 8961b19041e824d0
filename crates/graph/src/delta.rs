//! Delta queries: which groups and users changed since the last cycle. writeback uses them to
//! find the groups to look at; it then reads those groups completely (never trusting a
//! partial member list), so an idle cycle costs two requests and a busy one stays exact.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;
use writeback_core::{CloudId, CloudObject};

use crate::read::parse_object;
use crate::{GraphClient, GraphError};

/// User properties whose change matters: the anchors members are found by in AD.
pub const USER_DELTA_SELECT: &str = "id,onPremisesSyncEnabled,onPremisesSecurityIdentifier,onPremisesImmutableId";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collection {
    Groups,
    Users,
}

/// How Graph reported an object gone (`@removed`'s reason), as a hint only: the same object can
/// come more than once, in any order (delta-query-overview.md), so a removal is confirmed by
/// reading the object before anything is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Removed {
    /// Reason `changed`: soft-deleted (recycle bin).
    Soft,
    /// Reason `deleted`: gone for good.
    Permanent,
    /// No reason given ("the @removed object might include" one: it may not).
    Unknown,
}

/// The changes of one delta round, every page merged. Nothing here depends on the order the
/// entries came in.
#[derive(Debug, Default)]
pub struct DeltaRound {
    /// Every object the round named, changed or removed.
    pub named: BTreeSet<CloudId>,
    /// Objects with at least one `@removed` entry, and every reason given.
    pub removed: BTreeMap<CloudId, BTreeSet<Removed>>,
    /// Objects with at least one entry that is not a removal (so live at some point).
    pub live: BTreeSet<CloudId>,
    /// Per group, the members the round said were added and removed; a member said both (the
    /// entries' order is not reliable) is in neither. Hints to tell a stale read, not the truth.
    pub member_hints: BTreeMap<CloudId, (BTreeSet<CloudId>, BTreeSet<CloudId>)>,
    /// Member values added or removed across all entries (groups only), for the logs.
    pub member_changes: usize,
    /// Where the next round starts.
    pub delta_link: String,
}

impl DeltaRound {
    fn take(&mut self, item: &Value) {
        let Some(id) = item["id"].as_str().map(CloudId::new) else { return };
        self.named.insert(id.clone());
        if let Some(removed) = item.get("@removed") {
            let how = match removed["reason"].as_str() {
                Some("changed") => Removed::Soft,
                Some("deleted") => Removed::Permanent,
                _ => Removed::Unknown,
            };
            self.removed.entry(id).or_default().insert(how);
            return;
        }
        self.live.insert(id.clone());
        let members = item["members@delta"].as_array().map(Vec::as_slice).unwrap_or_default();
        self.member_changes += members.len();
        if members.is_empty() {
            return;
        }
        let (added, gone) = self.member_hints.entry(id).or_default();
        for m in members {
            let Some(mid) = m["id"].as_str().map(CloudId::new) else { continue };
            if m.get("@removed").is_some() {
                gone.insert(mid);
            } else {
                added.insert(mid);
            }
        }
    }

    /// Drops the member hints that contradict each other.
    fn settle(&mut self) {
        for (added, gone) in self.member_hints.values_mut() {
            let both: Vec<CloudId> = added.intersection(gone).cloned().collect();
            for m in both {
                added.remove(&m);
                gone.remove(&m);
            }
        }
    }
}

/// Codes that mean "start over" (delta-query-overview.md: an expired token gets "a 40X-series
/// error with error codes such as syncStateNotFound"; errors.md: resyncRequired and its inner
/// codes; syncStateInvalid is seen in practice, though undocumented).
const RESYNC_CODES: &[&str] =
    &["syncStateNotFound", "syncStateInvalid", "resyncRequired", "resyncApplyDifferences", "resyncUploadDifferences"];

/// A delta token Graph no longer knows: start over with a full sync. 410 Gone (with a Location
/// of the initial query) always; another 4xx when any of its codes, outer or inner, says so.
pub fn is_expired(e: &GraphError) -> bool {
    match e {
        GraphError::Api { status: 410, .. } => true,
        GraphError::Api { status: 400..=499, code, inner, .. } => {
            std::iter::once(code).chain(inner).any(|c| RESYNC_CODES.iter().any(|r| c.eq_ignore_ascii_case(r)))
        }
        _ => false,
    }
}

impl GraphClient {
    /// A delta link that starts now (`$deltatoken=latest`), without reading anything. With
    /// `owners`, the groups' owners are tracked too: delta tracks only what is selected
    /// (delta-query-overview.md), and owners is a directoryObject collection a group delta may
    /// select (group-delta.md).
    pub async fn latest_delta_link(&self, coll: Collection, owners: bool) -> Result<String, GraphError> {
        let url = match coll {
            Collection::Groups => {
                let owners = if owners { ",owners" } else { "" };
                format!(
                    "{}/beta/groups/delta?$select={},members{owners}&$deltatoken=latest",
                    self.cfg.graph_url,
                    self.group_select(true)
                )
            }
            Collection::Users => {
                format!("{}/v1.0/users/delta?$select={USER_DELTA_SELECT}&$deltatoken=latest", self.cfg.graph_url)
            }
        };
        let page = self.get(&url).await?;
        page["@odata.deltaLink"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| GraphError::Invalid("a $deltatoken=latest answer had no @odata.deltaLink".into()))
    }

    /// Follows a delta link through every page. Entries for one object (a group's members
    /// spread over several entries and pages, replays, a removal and a restore) are merged
    /// without regard to their order.
    pub async fn delta_round(&self, link: &str) -> Result<DeltaRound, GraphError> {
        let mut round = DeltaRound::default();
        let mut next = link.to_string();
        loop {
            let page = self.get(&next).await?;
            let items = page["value"]
                .as_array()
                .ok_or_else(|| GraphError::Invalid("a delta page had no value array".into()))?;
            for item in items {
                round.take(item);
            }
            if let Some(n) = page["@odata.nextLink"].as_str() {
                next = n.to_string();
            } else if let Some(d) = page["@odata.deltaLink"].as_str() {
                round.delta_link = d.to_string();
                round.settle();
                return Ok(round);
            } else {
                return Err(GraphError::Invalid(
                    "a delta page had neither @odata.nextLink nor @odata.deltaLink".into(),
                ));
            }
        }
    }

    /// Groups by id (in `$batch`es). Returns the groups found, the ids Graph does not know
    /// (404), and per-id failures; a failure is never mistaken for "gone".
    pub async fn groups_by_id(&self, ids: &[CloudId]) -> (Vec<CloudObject>, BTreeSet<CloudId>, Vec<(String, String)>) {
        let select = self.group_select(false);
        let reqs: Vec<(String, String)> =
            ids.iter().map(|id| (id.to_string(), format!("/groups/{id}?$select={select}"))).collect();
        let (mut found, mut missing, mut failed) = (Vec::new(), BTreeSet::new(), Vec::new());
        for (id, res) in self.batch_get(&reqs).await {
            match res {
                Ok(body) => match self.parse_group(&body) {
                    Ok(g) => found.push(g),
                    Err((_, why)) => failed.push((id, why)),
                },
                Err((404, _)) => {
                    missing.insert(CloudId::new(id));
                }
                Err((status, msg)) => failed.push((id, format!("Graph answered {status}: {msg}"))),
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        (found, missing, failed)
    }

    /// `onPremisesSyncBehavior.isCloudManaged` of groups, in `$batch`es (beta only:
    /// onpremisessyncbehavior-get.md, `GET /groups/{id}/onPremisesSyncBehavior`, permission
    /// Group-OnPremisesSyncBehavior.Read.All). A group Graph did not answer for is left out: its
    /// conversion is then judged without it (and why is logged once).
    pub async fn cloud_managed(&self, ids: &[CloudId]) -> HashMap<CloudId, Option<bool>> {
        let reqs: Vec<(String, String)> = ids
            .iter()
            .map(|id| (id.to_string(), format!("/groups/{id}/onPremisesSyncBehavior?$select=isCloudManaged")))
            .collect();
        let mut out = HashMap::new();
        let (mut denied, mut failed): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        for (id, res) in self.batch_get(&reqs).await {
            match res.map(|body| body.get("isCloudManaged").and_then(Value::as_bool)) {
                Ok(Some(managed)) => {
                    out.insert(CloudId::new(id), Some(managed));
                }
                // Not allowed to read it: judged by its SID alone (and said).
                Err((403, msg)) => denied.push(format!("{id}: {msg}")),
                // Any other failure is not known this cycle: never guessed.
                Ok(None) => {
                    failed.push(format!("{id}: no isCloudManaged in the answer"));
                    out.insert(CloudId::new(id), None);
                }
                Err((status, msg)) => {
                    failed.push(format!("{id}: Graph answered {status}: {msg}"));
                    out.insert(CloudId::new(id), None);
                }
            }
        }
        if let Some(first) = denied.first() {
            tracing::warn!(
                groups = denied.len(),
                first = %first,
                "onPremisesSyncBehavior may not be read (grant Group-OnPremisesSyncBehavior.Read.All): a converted \
                 group given back to AD is seen only once AD syncs it again"
            );
        }
        if let Some(first) = failed.first() {
            tracing::warn!(groups = failed.len(), first = %first, "onPremisesSyncBehavior could not be read: \
                those groups change hands in a later cycle");
        }
        out
    }

    /// Users by id (in `$batch`es), with what names their AD account: for the audit trail, which
    /// names a member a cycle removed. Best effort: users Graph does not return are left out.
    /// (user-get.md: `GET /users/{id}` with `$select` of user properties.)
    pub async fn users_by_id(&self, ids: &[CloudId]) -> Vec<CloudObject> {
        const USER_SELECT: &str =
            "id,displayName,onPremisesSyncEnabled,onPremisesSecurityIdentifier,onPremisesImmutableId";
        let reqs: Vec<(String, String)> =
            ids.iter().map(|id| (id.to_string(), format!("/users/{id}?$select={USER_SELECT}"))).collect();
        let mut found: Vec<CloudObject> = Vec::new();
        for (id, res) in self.batch_get(&reqs).await {
            match res
                .map_err(|(status, msg)| format!("{status}: {msg}"))
                .and_then(|b| parse_object(&b).map_err(|e| e.1))
            {
                Ok(u) => found.push(u),
                Err(why) => tracing::debug!(user = %id, %why, "a removed member could not be read"),
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found
    }

    /// Which of these (groups Graph no longer finds) are in the recycle bin: (in it, not in it,
    /// per-id failures). GET /directory/deletedItems/{id} (directory-deleteditems-get.md).
    pub async fn in_recycle_bin(
        &self,
        ids: &[CloudId],
    ) -> (BTreeSet<CloudId>, BTreeSet<CloudId>, Vec<(String, String)>) {
        let reqs: Vec<(String, String)> =
            ids.iter().map(|id| (id.to_string(), format!("/directory/deletedItems/{id}?$select=id"))).collect();
        let (mut bin, mut gone, mut failed) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
        for (id, res) in self.batch_get(&reqs).await {
            match res {
                Ok(_) => {
                    bin.insert(CloudId::new(id));
                }
                Err((404, _)) => {
                    gone.insert(CloudId::new(id));
                }
                Err((status, msg)) => failed.push((id, format!("Graph answered {status}: {msg}"))),
            }
        }
        (bin, gone, failed)
    }

    /// The groups that directly contain any of these objects (`memberOf`, roles and
    /// administrative units left out).
    pub async fn parents_of(&self, coll: Collection, ids: &[CloudId]) -> Result<BTreeSet<CloudId>, GraphError> {
        let kind = match coll {
            Collection::Groups => "groups",
            Collection::Users => "users",
        };
        let reqs: Vec<(String, String)> =
            ids.iter().map(|id| (id.to_string(), format!("/{kind}/{id}/memberOf?$select=id&$top=999"))).collect();
        let mut parents = BTreeSet::new();
        for (id, res) in self.batch_get(&reqs).await {
            let body = match res {
                Ok(b) => b,
                Err((404, _)) => continue,
                Err((status, msg)) => {
                    return Err(GraphError::Api {
                        status,
                        code: "batch".into(),
                        message: msg,
                        path: format!("/{kind}/{id}/memberOf"),
                        inner: Vec::new(),
                        retry_after: None,
                    })
                }
            };
            let mut items: Vec<Value> = body["value"].as_array().cloned().unwrap_or_default();
            if let Some(next) = body["@odata.nextLink"].as_str() {
                items.extend(self.get_all(next).await?);
            }
            // memberOf lists directory roles and administrative units beside groups (Graph
            // "List memberOf", user-list-memberof.md): only groups can be written back.
            let groups =
                items.iter().filter(|v| v["@odata.type"].as_str().is_none_or(|t| t == "#microsoft.graph.group"));
            parents.extend(groups.filter_map(|v| v["id"].as_str()).map(CloudId::new));
        }
        Ok(parents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::api_error;

    #[test]
    fn every_documented_way_of_saying_start_over_is_recognised() {
        let body = |code: &str, inner: &str| {
            serde_json::json!({"error": {"code": code, "message": "m", "innerError": {"code": inner}}}).to_string()
        };
        for (status, code, inner) in [
            (410, "gone", ""),
            (400, "syncStateNotFound", ""),
            (400, "syncStateInvalid", ""),
            (400, "badRequest", "resyncRequired"),
            (409, "resyncRequired", ""),
            (404, "itemNotFound", "resyncApplyDifferences"),
        ] {
            assert!(is_expired(&api_error(status, &body(code, inner), "https://g/x")), "{status} {code} {inner}");
        }
        assert!(!is_expired(&api_error(400, &body("badRequest", "invalidRequest"), "https://g/x")));
        assert!(!is_expired(&api_error(503, &body("syncStateNotFound", ""), "https://g/x")), "not a 4xx");
    }
}

#[cfg(test)]
mod round_tests {
    use super::*;
    use serde_json::json;

    fn round(items: &[Value]) -> DeltaRound {
        let mut r = DeltaRound::default();
        for i in items {
            r.take(i);
        }
        r.settle();
        r
    }

    #[test]
    fn a_round_does_not_depend_on_the_order_of_its_entries() {
        let restored = json!({"id": "G1", "displayName": "back"});
        let removal = json!({"id": "g1", "@removed": {"reason": "changed"}});
        let no_reason = json!({"id": "g2", "@removed": {}});
        let add = json!({"id": "g3", "members@delta": [{"id": "u1"}, {"id": "u2"}]});
        let drop = json!({
            "id": "g3",
            "members@delta": [
                {"id": "u2", "@removed": {"reason": "deleted"}},
                {"id": "u3", "@removed": {"reason": "deleted"}}
            ]
        });
        let a = round(&[restored.clone(), removal.clone(), no_reason.clone(), add.clone(), drop.clone(), add.clone()]);
        let b = round(&[drop, add, removal, no_reason, restored]);
        for r in [&a, &b] {
            assert!(
                r.live.contains("g1") && r.removed["g1"] == BTreeSet::from([Removed::Soft]),
                "both seen: confirmed later"
            );
            assert_eq!(r.removed["g2"], BTreeSet::from([Removed::Unknown]));
            let (added, gone) = &r.member_hints["g3"];
            assert_eq!((added.len(), gone.len()), (1, 1), "u2 was said both: no hint for it");
            assert!(added.contains("u1") && gone.contains("u3"));
            assert_eq!(r.named.len(), 3);
        }
    }
}
