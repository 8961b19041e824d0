//! Delta queries as Graph documents them for groups and users: an initial round with every
//! object (a group's members spread over several entries), `@odata.deltaLink`, later rounds
//! with only what changed (`@removed` with reason `changed` or `deleted`, `members@delta`),
//! `$deltatoken=latest`, and expired tokens (410 `syncStateNotFound`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::tenant::{bad, project, ODataError, Tenant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Coll {
    Groups,
    Users,
}

impl Coll {
    fn name(self) -> &'static str {
        match self {
            Coll::Groups => "groups",
            Coll::Users => "users",
        }
    }
}

/// One change to one object.
#[derive(Clone, Debug)]
struct Change {
    version: u64,
    coll: Coll,
    id: String,
    /// `Some("changed")` (soft delete) or `Some("deleted")` (permanent).
    removed: Option<&'static str>,
    /// Member ids added / removed (groups only).
    added: Vec<String>,
    dropped: Vec<String>,
    /// Owner ids added / removed (groups only).
    owners_added: Vec<String>,
    owners_dropped: Vec<String>,
    /// The properties that changed (`None`: the object is new here, so all of them).
    props: Option<BTreeSet<String>>,
}

/// What changed for one object since a token.
#[derive(Default)]
struct Net {
    removed: Option<&'static str>,
    added: BTreeSet<String>,
    dropped: BTreeSet<String>,
    owners_added: BTreeSet<String>,
    owners_dropped: BTreeSet<String>,
    /// A property or relationship that is tracked changed (with `$select`, only those selected).
    props: bool,
    /// A removal somewhere in the range, even if the object is back (restored) by its end.
    ever_removed: Option<&'static str>,
}

impl Change {
    /// A change of nothing yet (fields filled by the caller).
    fn none() -> Change {
        Change {
            version: 0,
            coll: Coll::Groups,
            id: String::new(),
            removed: None,
            added: vec![],
            dropped: vec![],
            owners_added: vec![],
            owners_dropped: vec![],
            props: Some(BTreeSet::new()),
        }
    }

    /// A removal, or a change of a property the query tracks: with `$select`, only those
    /// selected are (delta-query-overview.md: "only the selected properties are tracked").
    fn tracked(&self, select: Option<&[String]>) -> bool {
        self.removed.is_some()
            || match &self.props {
                None => true,
                Some(changed) => changed.iter().any(|p| select.is_none_or(|s| s.contains(p))),
            }
    }
}

/// The change journal behind delta tokens.
#[derive(Default)]
pub struct Journal {
    pub version: u64,
    changes: Vec<Change>,
    /// Tokens for versions below this are expired.
    expired_below: u64,
    /// Members per `members@delta` entry in an initial round (a large group spans entries).
    pub member_chunk: usize,
    /// Rounds come out of order, with replays: "the same item can show up anywhere in the
    /// @odata.nextLink sequence", "a single entity can be contained multiple times", replays
    /// "are still possible" (delta-query-overview.md). Each changed object twice, a removal
    /// undone within the round also as its `@removed` entry, after the live one, all reversed.
    pub shuffle: bool,
    /// `@removed` without a reason: it "might include" one (delta-query-overview.md).
    pub no_reason: bool,
}

fn id_of(v: &Value) -> String {
    v.get("id").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase()
}

fn props(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("members");
        m.remove("owners");
    }
    v
}

fn members(v: &Value) -> BTreeSet<String> {
    linked(v, "members")
}

fn owners(v: &Value) -> BTreeSet<String> {
    linked(v, "owners")
}

fn linked(v: &Value, nav: &str) -> BTreeSet<String> {
    v.get(nav)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_ascii_lowercase)
        .collect()
}

impl Journal {
    pub fn new() -> Journal {
        Journal { member_chunk: 50, ..Journal::default() }
    }

    /// Records what changed between two tenants (the control API replaces whole tenants).
    pub fn record(&mut self, old: &Tenant, new: &Tenant) {
        self.version += 1;
        let v = self.version;
        let index =
            |list: &[Value]| -> BTreeMap<String, Value> { list.iter().map(|x| (id_of(x), x.clone())).collect() };
        let soft: BTreeSet<String> = new.deleted_groups.iter().map(id_of).collect();
        for (coll, before, after) in [
            (Coll::Groups, index(&old.groups), index(&new.groups)),
            (Coll::Users, index(&old.users), index(&new.users)),
        ] {
            for (id, now) in &after {
                let empty = json!({});
                let was = before.get(id).unwrap_or(&empty);
                let diff = |a: BTreeSet<String>, b: BTreeSet<String>| -> (Vec<String>, Vec<String>) {
                    (b.difference(&a).cloned().collect(), a.difference(&b).cloned().collect())
                };
                let (added, dropped) = diff(members(was), members(now));
                let (owners_added, owners_dropped) = diff(owners(was), owners(now));
                let changed_props: Option<BTreeSet<String>> = before.get(id).map(|was| {
                    let (was, now) = (props(was), props(now));
                    let keys = was.as_object().into_iter().chain(now.as_object()).flat_map(|m| m.keys());
                    keys.filter(|k| was.get(k.as_str()) != now.get(k.as_str())).cloned().collect()
                });
                let changed = changed_props.as_ref().is_none_or(|c| !c.is_empty());
                if changed
                    || !added.is_empty()
                    || !dropped.is_empty()
                    || !owners_added.is_empty()
                    || !owners_dropped.is_empty()
                {
                    let removed = None;
                    self.changes.push(Change {
                        version: v,
                        coll,
                        id: id.clone(),
                        removed,
                        added,
                        dropped,
                        owners_added,
                        owners_dropped,
                        props: changed_props,
                    });
                }
            }
            for id in before.keys().filter(|id| !after.contains_key(*id)) {
                let reason = if coll == Coll::Groups && soft.contains(id) { "changed" } else { "deleted" };
                self.changes.push(Change { version: v, coll, id: id.clone(), removed: Some(reason), ..Change::none() });
            }
        }
        // "Items deleted from the deletedItems store also show as deleted"
        // (delta-query-overview.md): a group purged from the recycle bin.
        let now_anywhere: BTreeSet<String> = new.groups.iter().chain(&new.deleted_groups).map(id_of).collect();
        for id in old.deleted_groups.iter().map(id_of).filter(|id| !now_anywhere.contains(id)) {
            self.changes.push(Change {
                version: v,
                coll: Coll::Groups,
                id,
                removed: Some("deleted"),
                ..Change::none()
            });
        }
        // A user or group that is gone is no longer a member of anything: every group it was in
        // reports the removal in its members@delta (delta-query-groups.md), whether or not the
        // new tenant still lists the id among the group's members.
        // Soft-deleted objects keep their memberships until they are purged (group-delta.md, 2022).
        let now: BTreeSet<String> = new.users.iter().chain(&new.groups).chain(&new.deleted_groups).map(id_of).collect();
        let gone: BTreeSet<String> =
            old.users.iter().chain(&old.groups).map(id_of).filter(|id| !now.contains(id)).collect();
        if gone.is_empty() {
            return;
        }
        // This version's group changes by id: found once each, not by a scan per group.
        let mut mine: BTreeMap<String, usize> = self
            .changes
            .iter()
            .enumerate()
            .rev()
            .take_while(|(_, c)| c.version == v)
            .filter(|(_, c)| c.coll == Coll::Groups)
            .map(|(i, c)| (c.id.clone(), i))
            .collect();
        for g in &old.groups {
            let gid = id_of(g);
            let ids = g.get("members").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let lost: Vec<String> = ids
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .filter(|m| gone.contains(m))
                .collect();
            if lost.is_empty() || gone.contains(&gid) {
                continue;
            }
            match mine.get(&gid).and_then(|i| self.changes.get_mut(*i)) {
                Some(c) => {
                    for l in lost {
                        if !c.dropped.contains(&l) {
                            c.dropped.push(l);
                        }
                    }
                }
                None => {
                    mine.insert(gid.clone(), self.changes.len());
                    self.changes.push(Change {
                        version: v,
                        coll: Coll::Groups,
                        id: gid,
                        dropped: lost,
                        ..Change::none()
                    });
                }
            }
        }
    }

    /// A group's properties (`props`) changed through the API (PATCH).
    pub fn touch_group(&mut self, id: &str, props: &[&str]) {
        self.touch(Coll::Groups, id, props);
    }

    /// A user's properties changed (a PATCH): it appears in the next users delta round that
    /// selects one of them.
    pub fn touch_user(&mut self, id: &str, props: &[&str]) {
        self.touch(Coll::Users, id, props);
    }

    fn touch(&mut self, coll: Coll, id: &str, props: &[&str]) {
        self.version += 1;
        let props = Some(props.iter().map(|p| p.to_string()).collect());
        self.changes.push(Change { version: self.version, coll, id: id.to_ascii_lowercase(), props, ..Change::none() });
    }

    /// Every token issued so far stops working (as after 7 days).
    pub fn expire_all(&mut self) {
        // A new version, so that tokens issued from now on are valid.
        self.version += 1;
        self.expired_below = self.version;
    }

    /// The entries of a round from `since` (None: the initial round) to now.
    pub fn entries(
        &self,
        coll: Coll,
        since: Option<u64>,
        tenant: &Tenant,
        select: Option<&[String]>,
    ) -> Result<Vec<Value>, ODataError> {
        let list = match coll {
            Coll::Groups => &tenant.groups,
            Coll::Users => &tenant.users,
        };
        let member_entry = |mid: &str, removed: bool| {
            let t = tenant.find(mid).map(|(k, _)| k).unwrap_or("user");
            let mut m = json!({"@odata.type": format!("#microsoft.graph.{t}"), "id": mid});
            if removed {
                m["@removed"] = json!({"reason": "deleted"});
            }
            m
        };
        // members@delta comes by default or when selected (delta-query-groups.md); whether
        // owners@delta comes unselected is not documented: only when selected here.
        let wants_members = select.is_none_or(|s| s.iter().any(|p| p == "members"));
        let wants_owners = select.is_some_and(|s| s.iter().any(|p| p == "owners"));
        let select: Option<Vec<String>> =
            select.map(|s| s.iter().filter(|p| *p != "members" && *p != "owners").cloned().collect());
        let mut out = Vec::new();
        let Some(since) = since else {
            // Initial round: every object; a group's members spread over several entries.
            for obj in list {
                let mut base = project(obj, None, select.as_deref(), true)?;
                if coll == Coll::Groups && wants_owners {
                    base["owners@delta"] = Value::Array(owners(obj).iter().map(|o| member_entry(o, false)).collect());
                }
                let all: Vec<String> = members(obj).into_iter().collect();
                if coll == Coll::Users || !wants_members || all.is_empty() {
                    out.push(base);
                    continue;
                }
                for (i, chunk) in all.chunks(self.member_chunk.max(1)).enumerate() {
                    let mut e = if i == 0 { base.clone() } else { json!({"id": id_of(obj)}) };
                    e["members@delta"] = Value::Array(chunk.iter().map(|m| member_entry(m, false)).collect());
                    out.push(e);
                }
            }
            return Ok(out);
        };
        if since < self.expired_below {
            return Err(ODataError(
                410,
                "syncStateNotFound",
                "The delta token is expired or invalid: start a new round of delta queries without a token.".into(),
            ));
        }
        // Collapse the changes since the token per object, in order.
        let mut per: BTreeMap<String, Net> = BTreeMap::new();
        let mut order = Vec::new();
        for c in self.changes.iter().filter(|c| c.coll == coll && c.version > since) {
            let e = per.entry(c.id.clone()).or_insert_with(|| {
                order.push(c.id.clone());
                Net::default()
            });
            e.removed = c.removed;
            e.ever_removed = c.removed.or(e.ever_removed);
            e.props |= c.tracked(select.as_deref());
            for (adds, drops, added, dropped) in [
                (&c.added, &c.dropped, &mut e.added, &mut e.dropped),
                (&c.owners_added, &c.owners_dropped, &mut e.owners_added, &mut e.owners_dropped),
            ] {
                for a in adds {
                    dropped.remove(a);
                    added.insert(a.clone());
                }
                for d in drops {
                    added.remove(d);
                    dropped.insert(d.clone());
                }
            }
        }
        for id in order {
            let net = &per[&id];
            let kind = if coll == Coll::Groups { "group" } else { "user" };
            let current = tenant.find(&id).filter(|(k, _)| *k == kind).map(|(_, v)| v);
            // Only what is selected is tracked (delta-query-overview.md): a change of members or
            // owners alone shows only when that relationship is selected.
            let members_changed = wants_members && (!net.added.is_empty() || !net.dropped.is_empty());
            let owners_changed = wants_owners && (!net.owners_added.is_empty() || !net.owners_dropped.is_empty());
            let removal = |reason: &str| {
                let why = if self.no_reason { json!({}) } else { json!({"reason": reason}) };
                json!({"id": id, "@removed": why})
            };
            match (net.removed, current) {
                (Some(reason), None) => out.push(removal(reason)),
                (_, Some(obj)) if net.props || members_changed || owners_changed => {
                    let mut e = project(obj, None, select.as_deref(), true)?;
                    if coll == Coll::Groups && members_changed {
                        let mut m: Vec<Value> = net.added.iter().map(|a| member_entry(a, false)).collect();
                        m.extend(net.dropped.iter().map(|d| member_entry(d, true)));
                        e["members@delta"] = Value::Array(m);
                    }
                    // Relationships are annotations named propertyName@delta, the related objects
                    // by id only (group-delta.md).
                    if coll == Coll::Groups && owners_changed {
                        let mut o: Vec<Value> = net.owners_added.iter().map(|a| member_entry(a, false)).collect();
                        o.extend(net.owners_dropped.iter().map(|d| member_entry(d, true)));
                        e["owners@delta"] = Value::Array(o);
                    }
                    if self.shuffle {
                        // Reversed below: the stale removal ends up after the live entries.
                        if let Some(reason) = net.ever_removed {
                            out.push(removal(reason));
                        }
                        out.push(e.clone());
                    }
                    out.push(e);
                }
                _ => {}
            }
        }
        if self.shuffle {
            out.reverse();
        }
        Ok(out)
    }
}

/// Encodes a delta or skip token: (from version or none, to version, offset).
pub fn token(from: Option<u64>, to: u64, offset: usize) -> String {
    use base64::Engine;
    let from = from.map(|f| f.to_string()).unwrap_or_else(|| "i".into());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{from}:{to}:{offset}"))
}

pub fn parse_token(t: &str) -> Result<(Option<u64>, u64, usize), ODataError> {
    use base64::Engine;
    let err = || bad("Invalid delta or skip token".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t).map_err(|_| err())?;
    let s = String::from_utf8(raw).map_err(|_| err())?;
    let mut p = s.split(':');
    let from = match p.next().ok_or_else(err)? {
        "i" => None,
        f => Some(f.parse().map_err(|_| err())?),
    };
    let to = p.next().ok_or_else(err)?.parse().map_err(|_| err())?;
    let offset = p.next().ok_or_else(err)?.parse().map_err(|_| err())?;
    Ok((from, to, offset))
}

/// One page of a delta round, with `@odata.nextLink` or `@odata.deltaLink`.
pub fn page(
    journal: &Journal,
    coll: Coll,
    tenant: &Tenant,
    query: &BTreeMap<String, String>,
    page_size: usize,
    base_url: &str,
) -> Result<Value, ODataError> {
    let select: Option<Vec<String>> =
        query.get("$select").map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let (from, to, offset) = match (query.get("$skiptoken"), query.get("$deltatoken")) {
        (Some(skip), _) => parse_token(skip)?,
        (None, Some(latest)) if latest == "latest" => {
            return Ok(json!({
                "@odata.context": format!("{base_url}/$metadata#{}", coll.name()),
                "value": [],
                "@odata.deltaLink": format!(
                    "{base_url}/{}/delta?$deltatoken={}{}",
                    coll.name(),
                    token(Some(journal.version), journal.version, 0),
                    query.get("$select").map(|s| format!("&$select={s}")).unwrap_or_default()
                )
            }));
        }
        (None, Some(t)) => {
            let (_, to, _) = parse_token(t)?;
            (Some(to), journal.version, 0)
        }
        (None, None) => (None, journal.version, 0),
    };
    let entries = journal.entries(coll, from, tenant, select.as_deref())?;
    let end = (offset + page_size.max(1)).min(entries.len());
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(format!("{base_url}/$metadata#{}(delta)", coll.name())));
    body.insert("value".into(), Value::Array(entries[offset.min(end)..end].to_vec()));
    let sel = query.get("$select").map(|s| format!("&$select={s}")).unwrap_or_default();
    if end < entries.len() {
        body.insert(
            "@odata.nextLink".into(),
            json!(format!("{base_url}/{}/delta?$skiptoken={}{sel}", coll.name(), token(from, to, end))),
        );
    } else {
        body.insert(
            "@odata.deltaLink".into(),
            json!(format!("{base_url}/{}/delta?$deltatoken={}{sel}", coll.name(), token(Some(to), to, 0))),
        );
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(groups: Value, deleted: Value) -> Tenant {
        let mut t: Tenant = serde_json::from_value(
            json!({"groups": groups, "deletedGroups": deleted, "users": [{"id": "u1"}, {"id": "u2"}, {"id": "u3"}]}),
        )
        .expect("tenant");
        t.reindex();
        t
    }

    fn round(j: &Journal, t: &Tenant, q: &[(&str, &str)]) -> Value {
        let q: BTreeMap<String, String> = q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        page(j, Coll::Groups, t, &q, 100, "http://sim/beta").expect("page")
    }

    fn link_token(v: &Value) -> String {
        let link = v["@odata.deltaLink"].as_str().expect("deltaLink");
        link.split("$deltatoken=").nth(1).and_then(|x| x.split('&').next()).expect("token").to_string()
    }

    #[test]
    fn initial_round_then_changes_then_expiry() {
        let mut j = Journal::new();
        j.member_chunk = 2;
        let t0 = tenant(
            json!([{"id": "g1", "displayName": "A", "members": ["u1", "u2", "u3"]}, {"id": "g2", "displayName": "B"}]),
            json!([]),
        );
        j.record(&Tenant::default(), &t0);
        let first = round(&j, &t0, &[("$select", "id,displayName,members")]);
        let entries = first["value"].as_array().expect("value");
        assert_eq!(entries.len(), 3, "g1's three members come in two entries, then g2");
        assert_eq!(
            entries[1],
            json!({"id": "g1", "members@delta": [{"@odata.type": "#microsoft.graph.user", "id": "u3"}]})
        );
        let tok = link_token(&first);
        assert_eq!(round(&j, &t0, &[("$deltatoken", &tok)])["value"], json!([]), "nothing changed");

        // g1 loses u1 and is renamed; g2 goes to the recycle bin.
        let t1 = tenant(json!([{"id": "g1", "displayName": "A2", "members": ["u2", "u3"]}]), json!([{"id": "g2"}]));
        j.record(&t0, &t1);
        let changes = round(&j, &t1, &[("$deltatoken", &tok), ("$select", "id,displayName,members")]);
        let v = changes["value"].as_array().expect("value");
        assert_eq!(v[0]["displayName"], "A2");
        assert_eq!(
            v[0]["members@delta"],
            json!([{"@odata.type": "#microsoft.graph.user", "id": "u1", "@removed": {"reason": "deleted"}}])
        );
        assert_eq!(v[1], json!({"id": "g2", "@removed": {"reason": "changed"}}));
        let latest = round(&j, &t1, &[("$deltatoken", "latest")]);
        assert_eq!(latest["value"], json!([]));
        assert_eq!(round(&j, &t1, &[("$deltatoken", &link_token(&latest))])["value"], json!([]));

        // A user deleted: every group it was in reports the removal, though the tenant file
        // still lists it among g1's members.
        let mut t2: Tenant =
            serde_json::from_value(json!({"groups": [{"id": "g1", "displayName": "A2", "members": ["u2", "u3"]}],
            "deletedGroups": [{"id": "g2"}], "users": [{"id": "u1"}, {"id": "u3"}]}))
            .expect("tenant");
        t2.reindex();
        let tok2 = link_token(&changes);
        j.record(&t1, &t2);
        let after_delete = round(&j, &t2, &[("$deltatoken", &tok2), ("$select", "id,displayName,members")]);
        assert_eq!(
            after_delete["value"][0]["members@delta"],
            json!([{"@odata.type": "#microsoft.graph.user", "id": "u2", "@removed": {"reason": "deleted"}}]),
            "{after_delete}"
        );

        j.expire_all();
        let q: BTreeMap<String, String> = [("$deltatoken".to_string(), link_token(&changes))].into();
        let err = page(&j, Coll::Groups, &t1, &q, 100, "http://sim/beta").expect_err("expired");
        assert_eq!((err.0, err.1), (410, "syncStateNotFound"));
    }
}
