//! The planner: a pure function from (cloud snapshot, AD snapshot, state, config) to a plan.
//! The first run is the same code path as every other: a plan against an empty OU.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::anchor::{self, Resolved};
use crate::config::Nested;
use crate::config::{OnRemoval, PlannerConfig, GROUP_REMOVALS_MIN};
use crate::convert::{self, Conversion};
use crate::ids::{CloudId, Dn};
use crate::mapping::Target as MappedAttribute;
use crate::model::{
    group_type, AdGroup, AdObject, AdSnapshot, CloudObject, CloudSnapshot, MemberRead, ObjectKind, State,
};
use crate::naming;
use crate::plan::{
    AttrChange, Blocked, GroupReport, GroupTarget, Held, MemberReport, MemberStatus, ObjectError, Operation, Plan,
    SkipReason, Threshold,
};
use crate::rules::Rule;
use crate::scope::{decide_with, Decision};

/// The planner's own maps: a 100,000-group plan hashes millions of keys, and SipHash was a
/// tenth of it. foldhash is seeded per process, so crafted keys cannot aim at it.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type Set<K> = HashSet<K, foldhash::fast::RandomState>;

/// The message Windows gives for error 8518 (0x2146); Samba does not enforce it, we do.
pub const UNIVERSAL_CANT_HAVE_LOCAL: &str = "A universal group cannot have a local group as a member";

/// The groups in scope: which cloud groups are to be written, by id, with their decision.
pub fn decisions(cloud: &CloudSnapshot, rules: &[Rule]) -> BTreeMap<CloudId, Decision> {
    cloud.groups.iter().map(|g| (g.id.clone(), decide_with(g, rules))).collect()
}

struct Desired<'a> {
    id: Cow<'a, str>,
    group: &'a CloudObject,
    decision: &'a Decision,
    display: String,
    cn: String,
    dn: String,
    /// The sAMAccountName to write, when not the cn's: a converted group's original keeps its
    /// own; a `[[mappings]]` one (`sam_mapped`) unless another object holds it.
    sam: Option<String>,
    sam_mapped: bool,
    /// The cn is a `[[mappings]]` one (and the sAMAccountName made from it, when no mapping
    /// sets that): unique only if the cloud makes it so, so checked against the plan.
    cn_mapped: bool,
    sam_from_cn: bool,
    /// What the mappings could not do for this group (reported; the group is still written).
    notes: Vec<String>,
    /// Converted from AD and taken over by this run: the SID it was matched by.
    adopted: Option<String>,
}

impl Desired<'_> {
    /// A converted group's original AD group keeps its DN, cn and sAMAccountName.
    fn keep_name(&mut self, g: &AdGroup) {
        self.cn = g.cn.clone();
        self.dn = g.dn.to_string();
        self.sam = g.attrs.get("samaccountname").and_then(|v| v.first()).cloned();
        (self.sam_mapped, self.cn_mapped, self.sam_from_cn) = (false, false, false);
    }
}

/// Computes the plan. Pure: reads nothing, writes nothing.
pub fn plan(cloud: &CloudSnapshot, ad: &AdSnapshot, state: &State, cfg: &PlannerConfig) -> Plan {
    let mut p = Plan::default();
    p.groups.reserve(cloud.groups.len());
    for (id, message) in &cloud.rejected {
        p.errors.push(ObjectError { cloud_id: id.clone(), member_id: None, message: message.clone() });
    }
    let owned = index_owned(ad, state, &mut p);
    // As `decisions`, but hashed: it is looked up once per group.
    let decisions: Map<Cow<str>, Decision> =
        cloud.groups.iter().map(|g| (lower(&g.id), decide_with(g, &cfg.rules))).collect();

    // Desired shape of every group in scope; naming failures become per-object errors.
    let mut desired: Vec<Desired> = Vec::with_capacity(cloud.groups.len());
    let mut seen: Set<&str> = Set::default();
    // Owned groups given back to AD (SOA rollback): released, neither updated nor orphaned.
    let mut released: Set<&str> = Set::default();
    for g in &cloud.groups {
        let id = lower(&g.id);
        let Some((key, decision)) = decisions.get_key_value(&id) else { continue };
        if !seen.insert(key) {
            continue;
        }
        // The id becomes the marker and the cn: only a real object id may.
        if !naming::is_guid(&id) {
            let label: String = g.id.chars().take(80).collect();
            p.errors.push(ObjectError {
                cloud_id: label,
                member_id: None,
                message: "the group's id is not a GUID; it is ignored".into(),
            });
            continue;
        }
        if decision.invalid {
            p.errors.push(ObjectError { cloud_id: id.to_string(), member_id: None, message: decision.reason.clone() });
        }
        if !decision.in_scope {
            match owned.get_key_value(&*id) {
                None => p.groups.push(report(g, &id, decision, None, "not written", vec![])),
                Some((key, group)) => {
                    if let Conversion::GivenBack(sid) = convert::conversion(g, cloud) {
                        if convert::same_sid(group, sid) {
                            give_back(&mut p, group, ad, "synced from AD again after its conversion was rolled back");
                            released.insert(*key);
                        }
                    }
                }
            }
            continue;
        }
        match shape(g, &id, decision, cfg) {
            Ok(d) => desired.push(d),
            Err(message) => {
                p.errors.push(ObjectError { cloud_id: id.to_string(), member_id: None, message: message.clone() });
                p.groups.push(report(g, &id, decision, None, &format!("not written: {message}"), vec![]));
            }
        }
    }
    // Planned in id order: plans read the same every time.
    desired.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let owned = converted(&mut p, &mut desired, cloud, ad, owned, &mut released, cfg);
    settle_mapped_cns(&mut desired, &owned, state, cfg);
    settle_mapped_sams(&mut desired, &owned, ad, cfg);

    // Which groups exist in AD once this run is through, for nesting: owned ones that
    // stay, and the ones this run adds. A group whose read is incomplete is not added.
    let mut targets: Map<&str, GroupTarget> = Map::default();
    targets.reserve(desired.len());
    for d in &desired {
        let complete = matches!(cloud.members.get(&*d.id), Some(MemberRead::Complete(_)));
        if let Some(existing) = owned.get(&*d.id) {
            targets.insert(
                &d.id,
                GroupTarget::Existing { guid: existing.guid.as_str().into(), dn: existing.dn.as_str().into() },
            );
        } else if complete && !ad.outside.contains_key(&*d.id) {
            targets.insert(&d.id, GroupTarget::New { cloud_id: CloudId::from(&*d.id), dn: d.dn.clone() });
        }
    }

    let mut users = UserMembers::default();
    for d in &desired {
        plan_group(&mut p, d, owned.get(&*d.id).copied(), cloud, ad, state, &targets, &mut users, cfg);
        if let (Some(sid), Some(r)) = (&d.adopted, p.groups.last_mut()) {
            r.action = format!("adopt (converted from AD, SID {sid}), then {}", r.action);
        }
    }

    let mut orphans: Vec<(&str, &AdGroup)> = owned
        .iter()
        .map(|(id, g)| (*id, *g))
        // In scope but not writable this run (reported above): leave it alone.
        .filter(|(id, _)| !decisions.get(*id).is_some_and(|d| d.in_scope))
        .filter(|(id, _)| desired.binary_search_by(|d| (*d.id).cmp(id)).is_err())
        .filter(|(id, _)| !released.contains(id))
        .collect();
    orphans.sort_unstable_by_key(|(id, _)| *id);
    for (id, group) in orphans {
        plan_orphan(&mut p, id, group, cloud, ad, &decisions, cfg);
    }

    p.operations.sort_by_key(Operation::phase);
    p.summarize();
    check_thresholds(&mut p, cfg);
    p
}

/// Owned groups by cloud id. Two objects with one marker: the linked one (or the first)
/// is managed; the others are reported and never touched.
fn index_owned<'a>(ad: &'a AdSnapshot, state: &State, p: &mut Plan) -> Map<&'a str, &'a AdGroup> {
    let mut owned: Map<&str, &AdGroup> = Map::default();
    owned.reserve(ad.groups.len());
    // Rare (an administrator copied a marker): kept apart so the common case allocates nothing.
    let mut shared: BTreeMap<&str, Vec<&AdGroup>> = BTreeMap::new();
    for g in &ad.groups {
        if let Some(first) = owned.insert(&g.cloud_id, g) {
            shared.entry(&g.cloud_id).or_insert_with(|| vec![first]).push(g);
        }
    }
    for (id, mut groups) in shared {
        groups.sort_by_key(|g| (Some(&g.guid) != state.links.get(id).map(|l| &l.guid), g.dn.to_string()));
        let others: Vec<&str> = groups[1..].iter().map(|g| g.dn.as_str()).collect();
        p.errors.push(ObjectError {
            cloud_id: id.to_string(),
            member_id: None,
            message: format!(
                "{} AD groups carry the marker {}: writeback manages {} and leaves {} \
                    alone; remove the marker from the extra objects",
                groups.len(),
                naming::marker(id),
                groups[0].dn,
                others.join("; ")
            ),
        });
        owned.insert(id, groups[0]);
    }
    owned
}

/// A group's name and place in AD; its attributes come later, one group at a time
/// ([`desired_attrs`]), so a 100,000-group plan never holds them all.
fn shape<'a>(
    g: &'a CloudObject,
    id: &Cow<'a, str>,
    decision: &'a Decision,
    cfg: &PlannerConfig,
) -> Result<Desired<'a>, String> {
    let display = naming::display_name(g.name())?;
    let mut cn = naming::cn_for(cfg.cn_format, id, g.name());
    let (mut sam, mut notes, mut cn_mapped) = (None, Vec::new(), false);
    for m in &cfg.mappings {
        match m.attribute {
            MappedAttribute::Cn => match naming::mapped_cn(&m.value.eval(g)) {
                Ok(c) => (cn, cn_mapped) = (c, true),
                Err(why) => {
                    notes.push(format!("[[mappings]] cn \"{}\": {why}; the default cn is used", m.value.source()))
                }
            },
            MappedAttribute::SamAccountName => match naming::sam_account_name(&m.value.eval(g)) {
                v if v.is_empty() => notes.push(format!(
                    "[[mappings]] sAMAccountName \"{}\" gives an empty name; the default is used",
                    m.value.source()
                )),
                v => sam = Some(v),
            },
            _ => {}
        }
    }
    let dn = naming::group_dn(&cn, decision.target_ou.as_deref().unwrap_or(&cfg.target_ou));
    // A mapped cn no longer carries the object id: the sAMAccountName made from it is checked
    // as a mapped one.
    let sam_from_cn = cn_mapped && sam.is_none();
    if sam_from_cn {
        sam = Some(naming::sam_account_name(&cn));
    }
    let sam_mapped = sam.is_some();
    Ok(Desired {
        id: id.clone(),
        group: g,
        decision,
        display,
        cn,
        dn,
        sam,
        sam_mapped,
        cn_mapped,
        sam_from_cn,
        notes,
        adopted: None,
    })
}

/// A mapped cn whose DN another of our groups holds (its link or its place in AD, so a delta
/// cycle decides as a full one does), or that an earlier group of this plan (in id order) is
/// mapped to: the group gets the default cn (and, when its sAMAccountName came from the cn, the
/// default one too), and is told why. The holder keeps its name.
fn settle_mapped_cns(desired: &mut [Desired], owned: &Map<&str, &AdGroup>, state: &State, cfg: &PlannerConfig) {
    if !desired.iter().any(|d| d.cn_mapped) {
        return;
    }
    let mut claimed: Map<String, String> = Map::default();
    for (id, link) in &state.links {
        claimed.insert(link.dn.as_str().to_lowercase(), id.to_string());
    }
    for (id, g) in owned {
        claimed.insert(g.dn.as_str().to_lowercase(), id.to_string());
    }
    for d in desired.iter_mut() {
        let key = d.dn.to_lowercase();
        match claimed.get(&key) {
            Some(other) if d.cn_mapped && **other != *d.id => {
                let parent = naming::split_dn(&d.dn).1.to_string();
                d.notes.push(format!(
                    "[[mappings]] cn \"{}\" is also the mapped cn of group {other} in the same OU: \
                     the default cn is used",
                    d.cn
                ));
                d.cn = naming::cn_for(cfg.cn_format, &d.id, d.group.name());
                d.dn = naming::group_dn(&d.cn, &parent);
                d.cn_mapped = false;
                if d.sam_from_cn {
                    (d.sam, d.sam_mapped, d.sam_from_cn) = (None, false, false);
                }
            }
            _ => {
                claimed.insert(key, d.id.to_string());
            }
        }
    }
}

/// A mapped sAMAccountName another AD object holds, or that an earlier group of this plan
/// (in id order) took, is not written: the group keeps the one it has (or the default), and
/// the clash is reported for it.
fn settle_mapped_sams(desired: &mut [Desired], owned: &Map<&str, &AdGroup>, ad: &AdSnapshot, cfg: &PlannerConfig) {
    let mut claimed: Map<String, String> = Map::default();
    for d in desired.iter_mut().filter(|d| d.sam_mapped) {
        let Some(sam) = d.sam.clone() else { continue };
        let key = sam.to_lowercase();
        let existing = owned.get(&*d.id).copied();
        let holder = ad.sam_owners.get(&key).filter(|g| existing.is_none_or(|e| &e.guid != *g));
        let clash = match (holder, claimed.get(&key)) {
            (Some(guid), _) => Some(format!("another AD object holds it (objectGUID {guid})")),
            (None, Some(other)) => Some(format!("group {other} of this run is mapped to it too")),
            (None, None) => None,
        };
        match clash {
            None => {
                claimed.insert(key, d.id.to_string());
            }
            Some(why) => {
                let keeps = existing.and_then(|e| e.attrs.get("samaccountname")).and_then(|v| v.first()).cloned();
                let kept = if keeps.is_some() { "keeps the one it has" } else { "gets the default one" };
                d.notes.push(format!("[[mappings]] sAMAccountName \"{sam}\" is not written: {why}; the group {kept}"));
                // The default one, not the mapped cn's (that is the name refused).
                let default = || naming::sam_account_name(&naming::cn_for(cfg.cn_format, &d.id, d.group.name()));
                d.sam = Some(keeps.unwrap_or_else(default));
                d.sam_mapped = false;
            }
        }
    }
}

/// The attributes a group should have, and the values left out because AD cannot hold
/// them (reported; the group is still written).
type Attrs = Vec<(&'static str, Vec<String>)>;

fn desired_attrs(
    d: &Desired,
    (cloud, ad, existing): (&CloudSnapshot, &AdSnapshot, Option<&AdGroup>),
    cfg: &PlannerConfig,
) -> (Attrs, Vec<String>) {
    let (g, id, decision, cn) = (d.group, &*d.id, d.decision, &d.cn);
    let marker = naming::marker(id);
    let gt = decision.group_type.unwrap_or(group_type::UNIVERSAL_SECURITY);
    let mut attrs: Vec<(&'static str, Vec<String>)> = Vec::with_capacity(10);
    attrs.extend([
        ("sAMAccountName", vec![d.sam.clone().unwrap_or_else(|| naming::sam_account_name(cn))]),
        ("groupType", vec![gt.to_string()]),
        ("displayName", opt(Some(d.display.clone()))),
        ("description", opt(naming::description(g.description.as_deref()))),
    ]);
    attrs.extend(convert::marker_attributes(&ad.schema).iter().map(|a| (*a, vec![marker.clone()])));
    let mut problems = d.notes.clone();
    mapped_attrs(g, cfg, &mut attrs, &mut problems);
    if decision.mail {
        let mail = g.mail.as_deref().map(str::trim).filter(|m| !m.is_empty());
        if let Some(m) = mail.filter(|m| !naming::valid_mail(m)) {
            problems.push(format!(
                "mail {:?} is not an address AD can hold; mail is not written",
                m.chars().take(80).collect::<String>()
            ));
        }
        attrs.push(("mail", opt(mail.filter(|m| naming::valid_mail(m)).map(str::to_string))));
        let mut proxies: Vec<String> = Vec::new();
        // The addresses Exchange routes by: every SMTP address and the X500 ones (Exchange
        // hybrid: "Only the x500 address from Exchange Online is inserted"); a cloud service's
        // own (SPO:, SIP:) stay in the cloud. Nothing is made up that Graph did not send.
        let routable = |p: &&str| {
            naming::proxy_type(p).is_some_and(|t| t.eq_ignore_ascii_case("smtp") || t.eq_ignore_ascii_case("x500"))
        };
        for p in g.proxy_addresses.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).filter(routable) {
            if naming::valid_proxy_address(p) {
                proxies.push(p.to_string());
            } else {
                problems.push(format!(
                    "proxy address {:?} is not valid; it is not written",
                    p.chars().take(80).collect::<String>()
                ));
            }
        }
        proxies.sort();
        proxies.dedup();
        attrs.push(("proxyAddresses", proxies));
        if ad.schema.exchange {
            let nick = g.mail_nickname.clone().filter(|n| naming::valid_nickname(n));
            if nick.is_none() && g.mail_nickname.as_deref().is_some_and(|n| !n.is_empty()) {
                problems.push("mailNickname is not valid; it is not written".into());
            }
            attrs.push(("mailNickname", opt(nick)));
        }
    }
    if cfg.write_owners {
        if let Some(owner) = managed_by(cloud, ad, id, existing, &mut problems) {
            attrs.push(("managedBy", owner));
        }
    }
    (attrs, problems)
}

/// What `[[mappings]]` set beyond the name: description, info, extensionAttributeN. An empty
/// value clears the attribute; one longer than AD holds is reported and not written.
fn mapped_attrs(g: &CloudObject, cfg: &PlannerConfig, attrs: &mut Attrs, problems: &mut Vec<String>) {
    for m in &cfg.mappings {
        if matches!(m.attribute, MappedAttribute::Cn | MappedAttribute::SamAccountName) {
            continue;
        }
        let name = m.attribute.ldap_name();
        let value = naming::printable(m.value.eval(g).trim()).into_owned();
        attrs.retain(|(a, _)| *a != name);
        let len = value.encode_utf16().count();
        if len > m.attribute.max_len() {
            problems.push(format!(
                "[[mappings]] {name}: the value is {len} characters long; AD holds at most {}: not written",
                m.attribute.max_len()
            ));
            continue;
        }
        attrs.push((name, opt((!value.is_empty()).then_some(value))));
    }
}

/// `managedBy`: the first owner that resolves to an AD user (the current one while it still
/// qualifies, so a reordering never flaps it); empty when none does; `None` (leave it alone)
/// when the owners were not read completely. An owner whose anchors name the wrong object is
/// reported in `problems` (`anchor-mismatch`) and passed over.
fn managed_by(
    cloud: &CloudSnapshot,
    ad: &AdSnapshot,
    id: &str,
    existing: Option<&AdGroup>,
    problems: &mut Vec<String>,
) -> Option<Vec<String>> {
    let Some(MemberRead::Complete(owners)) = cloud.owners.get(id) else { return None };
    // An owner Graph would not show (type and id only) might be the one: leave managedBy alone.
    if owners.iter().any(|o| o.unreadable()) {
        problems.push(
            "an owner came back from Graph with only its type and id (grant User.Read.All): managedBy is left as it is"
                .into(),
        );
        return None;
    }
    let mut resolved: Vec<&str> = Vec::new();
    for o in owners.iter().filter(|o| o.kind() == ObjectKind::User) {
        match anchor::ad_object(o, &ad.directory) {
            Resolved::Found(obj) => resolved.push(&obj.guid),
            Resolved::Mismatch(why) => problems.push(format!(
                "owner {} ({}): {why}; not written as managedBy ({})",
                naming::printable(o.name()),
                o.id,
                SkipReason::AnchorMismatch
            )),
            Resolved::CloudOnly | Resolved::NotFound => {}
        }
    }
    let current = existing
        .and_then(|e| e.attrs.get("managedby"))
        .and_then(|v| v.first())
        .and_then(|v| naming::extended_dn_guid(v));
    let pick = resolved.iter().find(|g| Some(**g) == current.as_deref()).or(resolved.first());
    Some(pick.map(|g| format!("<GUID={g}>")).into_iter().collect())
}

fn opt(v: Option<String>) -> Vec<String> {
    v.filter(|s| !s.is_empty()).into_iter().collect()
}

fn report(
    g: &CloudObject,
    id: &str,
    d: &Decision,
    dn: Option<String>,
    action: &str,
    members: Vec<Arc<MemberReport>>,
) -> GroupReport {
    GroupReport {
        cloud_id: id.into(),
        display_name: g.name().to_string(),
        in_scope: d.in_scope,
        reason: d.reason.clone(),
        dn,
        group_type: d.group_type,
        action: action.to_string(),
        members,
    }
}

/// User members already resolved in this plan, by object (members are shared between groups).
type UserMembers = Map<*const CloudObject, (Arc<MemberReport>, Option<GroupTarget>)>;

#[allow(clippy::too_many_arguments)]
fn plan_group(
    p: &mut Plan,
    d: &Desired,
    existing: Option<&AdGroup>,
    cloud: &CloudSnapshot,
    ad: &AdSnapshot,
    state: &State,
    targets: &Map<&str, GroupTarget>,
    users: &mut UserMembers,
    cfg: &PlannerConfig,
) {
    let id: &str = &d.id;
    if let (None, Some(dn)) = (existing, ad.outside.get(id)) {
        let why = format!(
            "the AD group written for it, {dn}, is outside the managed OUs (moved by \
                hand?): move it back into {}, or remove its marker to have a new group \
                created; nothing is written",
            d.decision.target_ou.as_deref().unwrap_or(&cfg.target_ou)
        );
        p.errors.push(ObjectError { cloud_id: id.to_string(), member_id: None, message: why.clone() });
        p.groups.push(report(d.group, id, d.decision, Some(dn.clone()), &format!("not written: {why}"), vec![]));
        return;
    }
    let (attrs, problems) = desired_attrs(d, (cloud, ad, existing), cfg);
    for message in problems {
        p.errors.push(ObjectError { cloud_id: id.to_string(), member_id: None, message });
    }
    let dn_now = existing.map(|e| e.dn.to_string()).unwrap_or_else(|| d.dn.clone());
    let skip = |p: &mut Plan, why: String| {
        p.errors.push(ObjectError { cloud_id: id.to_string(), member_id: None, message: why.clone() });
        p.groups.push(report(
            d.group,
            id,
            d.decision,
            existing.map(|e| e.dn.to_string()),
            &format!("skipped this run: {why}"),
            vec![],
        ));
    };
    let cloud_members = match cloud.members.get(id) {
        Some(MemberRead::Complete(m)) => m,
        other => {
            let why = match other {
                Some(MemberRead::Incomplete(e)) => format!("the cloud members could not be read completely ({e})"),
                _ => "the cloud members were not read".to_string(),
            };
            return skip(p, format!("{why}; the group is left as it is"));
        }
    };
    if existing.is_some_and(|e| e.members.is_none()) {
        return skip(p, "the AD members could not be read completely; the group is left as it is".into());
    }

    // nested = "flatten": each nested cloud group not written back gives way to its transitive
    // members (their reports say `via` it); one of their reads incomplete and the group is left
    // as it is (a partial list must never become removals).
    let listed: Listed = match cfg.nested {
        Nested::Link => cloud_members.iter().map(|m| (m, None)).collect(),
        Nested::Flatten => match flattened(id, cloud_members, cloud, ad, state, targets, cfg) {
            Ok(f) => f,
            Err(why) => return skip(p, format!("{why}; the group is left as it is")),
        },
    };
    // Resolve what this plan has not met yet. A user resolves the same in every group: once
    // per user, not once per membership (looked up by address first: reading the member
    // itself is a cache miss). Other members are resolved per group, in order.
    let mut others = Vec::new();
    for (m, _) in &listed {
        if let Entry::Vacant(slot) = users.entry(Arc::as_ptr(m)) {
            let r = resolve_member(m, id, ad, state, targets, cfg, p);
            if m.kind() == ObjectKind::User {
                slot.insert(r);
            } else {
                others.push(r);
            }
        }
    }
    // Desired members, each with its explanation; borrowed, not cloned: a steady cycle
    // compares a million memberships and changes none.
    let mut reports = Vec::with_capacity(listed.len());
    let mut wanted: Vec<&GroupTarget> = Vec::with_capacity(listed.len());
    let mut wanted_keys: Set<Cow<str>> = Set::with_capacity_and_hasher(listed.len(), Default::default());
    // A member met directly and through a nested group is explained once (directly).
    let mut explained: Set<&str> = Set::default();
    let mut others = others.iter();
    for (m, via) in &listed {
        let Some((report, target)) = users.get(&Arc::as_ptr(m)).or_else(|| others.next()) else { continue };
        if cfg.nested == Nested::Flatten && !explained.insert(m.id.as_str()) {
            continue;
        }
        if let Some(t) = target {
            if wanted_keys.insert(target_key(t)) {
                wanted.push(t);
            }
        }
        match via {
            None => reports.push(report.clone()),
            Some(v) => reports.push(Arc::new(MemberReport { via: Some(v.clone()), ..(**report).clone() })),
        }
    }

    let Some(existing) = existing else {
        // Groups this run adds can only be members once they exist: added after.
        let (inline, later): (Vec<GroupTarget>, Vec<GroupTarget>) =
            wanted.into_iter().cloned().partition(|t| matches!(t, GroupTarget::Existing { .. }));
        let mut add = Vec::with_capacity(attrs.len() + 2);
        add.push(("objectClass".to_string(), vec!["group".to_string()]));
        add.push(("cn".to_string(), vec![d.cn.clone()]));
        add.extend(attrs.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v)));
        let attrs = add;
        p.operations.push(Operation::Add { cloud_id: id.into(), dn: d.dn.clone(), attrs, members: inline });
        if !later.is_empty() {
            let group = GroupTarget::New { cloud_id: id.into(), dn: d.dn.clone() };
            p.operations.push(Operation::AddMembers { cloud_id: id.into(), group, members: later });
        }
        let action = match state.links.get(id).map(|l| &l.guid) {
            Some(old) => {
                p.notices.push(format!(
                    "{} ({id}): the AD group written before (objectGUID {old}) is gone from \
                        AD; it is created again with a new SID, so ACLs that named the old \
                        group must be updated",
                    naming::printable(d.group.name())
                ));
                format!(
                    "add (the AD group written before, objectGUID {old}, is gone: it is created again with a new SID)"
                )
            }
            None => "add".into(),
        };
        p.groups.push(report(d.group, id, d.decision, Some(dn_now), &action, reports));
        return;
    };

    let mut actions = Vec::new();
    let target = match targets.get(id) {
        Some(t @ GroupTarget::Existing { .. }) => t.clone(),
        _ => GroupTarget::Existing { guid: existing.guid.as_str().into(), dn: existing.dn.as_str().into() },
    };
    // Where it belongs: the target OU, unless it sits in an OU whose groups stay in place
    // (adopted from Azure AD Connect without moving them).
    let parent = Dn::new(existing.dn.parent());
    let stays = cfg.stay_in.iter().chain(&cfg.converted_ous).any(|ou| parent.is_within(ou));
    let want_parent =
        if stays { parent.to_string() } else { d.decision.target_ou.clone().unwrap_or_else(|| cfg.target_ou.clone()) };
    let moved = parent != *want_parent;
    let want_dn =
        if !moved && existing.cn == d.cn { existing.dn.to_string() } else { naming::group_dn(&d.cn, &want_parent) };
    if existing.cn != d.cn || moved {
        p.operations.push(Operation::Rename {
            cloud_id: id.into(),
            guid: existing.guid.clone(),
            dn: existing.dn.to_string(),
            new_rdn: format!("CN={}", naming::escape_rdn_value(&d.cn)),
            new_parent: moved.then(|| want_parent.clone()),
            new_dn: want_dn.clone(),
        });
        actions.push(if moved { "move" } else { "rename" });
    }

    let changes = attr_changes(&attrs, existing);
    if !changes.is_empty() {
        p.operations.push(Operation::Update {
            cloud_id: id.into(),
            guid: existing.guid.clone(),
            dn: existing.dn.to_string(),
            changes,
        });
        actions.push("update");
    }

    // Members to remove: AD's values not wanted. Members to add: only looked for when some
    // wanted one was not among AD's values (the common case, in sync, builds no second set).
    let mut found = 0;
    let mut gone: Vec<(Cow<str>, &crate::model::AdRef)> = Vec::new();
    for r in existing.members.iter().flatten() {
        let guid = lower(&r.guid);
        if wanted_keys.contains(&guid) {
            found += 1;
        } else {
            gone.push((guid, r));
        }
    }
    let adds: Vec<GroupTarget> = if found >= wanted_keys.len() {
        Vec::new()
    } else {
        let current: Set<Cow<str>> = existing.members.iter().flatten().map(|r| lower(&r.guid)).collect();
        wanted.iter().filter(|t| !current.contains(&target_key(t))).map(|t| (*t).clone()).collect()
    };
    // By objectGUID: plans read the same every time.
    gone.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    gone.dedup_by(|a, b| a.0 == b.0);
    let removes: Vec<GroupTarget> = gone
        .into_iter()
        .map(|(guid, r)| GroupTarget::Existing { guid: (*guid).into(), dn: r.dn.as_str().into() })
        .collect();
    // The Tier-0 guard holds back additions only: a removal lowers privilege (a PIM expiry
    // must leave AD even when the group is nested somewhere sensitive).
    let guard = ad.protected.get(id).filter(|_| !cfg.allow_protected_nesting.iter().any(|a| a == id));
    let adds = match guard {
        Some(path) if !adds.is_empty() => {
            p.errors.push(ObjectError {
                cloud_id: id.to_string(),
                member_id: None,
                message: format!(
                    "Tier-0 guard: {path}. writeback adds no members to a group nested into \
                        a protected group ({} held back; removals still apply): remove the \
                        nesting, or list this id in [writeback] allow_protected_nesting",
                    adds.len()
                ),
            });
            actions.push("new members held back by the Tier-0 guard");
            p.guarded.push(crate::plan::Guarded {
                cloud_id: id.into(),
                display_name: d.group.name().to_string(),
                path: path.clone(),
                held: adds.len(),
            });
            Vec::new()
        }
        _ => adds,
    };
    if !adds.is_empty() {
        p.operations.push(Operation::AddMembers { cloud_id: id.into(), group: target.clone(), members: adds });
        actions.push("add members");
    }
    let in_ad = existing.members.as_ref().map_or(0, Vec::len);
    let unreadable = reports.iter().filter(|r| r.reason == Some(SkipReason::Unreadable)).count();
    // Taken over from AD (this run, or held since): its removals wait for an approval.
    let taken_over = d.adopted.is_some() || state.takeover_holds.contains(id);
    if taken_over && unreadable == 0 && (removes.is_empty() || cfg.allow.takeover_removals_ok(id, removes.len())) {
        p.takeover_cleared.push(id.into());
    }
    if unreadable > 0 && !removes.is_empty() {
        // Any value AD has might be one of the members Graph would not show: removing would be
        // guessing. Additions of the members it could read still go through.
        p.errors.push(ObjectError {
            cloud_id: id.to_string(),
            member_id: None,
            message: format!(
                "{unreadable} of its cloud members came back from Graph with only their \
                    type and id (the app may not read them: grant User.Read.All, and \
                    Group.Read.All for nested groups); its {} member removals are held back \
                    until they can be read",
                removes.len()
            ),
        });
        actions.push("removals held back (unreadable members)");
    } else if !removes.is_empty() && taken_over && !cfg.allow.takeover_removals_ok(id, removes.len()) {
        // Members the cloud group cannot express (computers without write_devices, members of
        // other domains without gc_url) would go with the rest: an administrator looks first.
        let held = Held {
            cloud_id: id.into(),
            display_name: d.group.name().to_string(),
            removals: removes.len(),
            message: String::new(),
            taken_over: true,
        };
        let message = format!(
            "taken over from AD: {} of its {in_ad} members are not in the cloud group (computers without \
                [writeback] write_devices, members of other domains without [ad] gc_url, or members the \
                cloud group lacks); they are kept until approved. Check the group (writeback show {id}), \
                then `{}` lets the next cycle remove them",
            removes.len(),
            held.approve_command()
        );
        p.errors.push(ObjectError { cloud_id: id.to_string(), member_id: None, message: message.clone() });
        p.held.push(Held { message, ..held });
        actions.push("removals held back (taken over from AD)");
    } else if removals_held(id, removes.len(), in_ad, cfg) {
        let held = Held {
            cloud_id: id.into(),
            display_name: d.group.name().to_string(),
            removals: removes.len(),
            message: String::new(),
            taken_over: false,
        };
        let message = format!(
            "{} of its {in_ad} members would be removed in one run, more than \
                [writeback] member_removal_percent = {}% (and more than \
                {GROUP_REMOVALS_MIN}): the removals are held back, the rest of the run \
                is applied. Check the group (writeback show {id}), then approve them: `{}` \
                lets the next cycle (the daemon's too) make them; or, where no daemon runs, \
                `writeback sync --allow-deletes`",
            removes.len(),
            cfg.member_removal_percent,
            held.approve_command()
        );
        p.errors.push(ObjectError { cloud_id: id.to_string(), member_id: None, message: message.clone() });
        p.held.push(Held { message, ..held });
        actions.push("removals held back (member_removal_percent)");
    } else if !removes.is_empty() {
        p.operations.push(Operation::RemoveMembers { cloud_id: id.into(), group: target, members: removes });
        actions.push("remove members");
    }
    let action = if actions.is_empty() { "in sync".to_string() } else { actions.join(", ") };
    p.groups.push(report(d.group, id, d.decision, Some(want_dn), &action, reports));
}

/// `s` in lower case, copied only when it is not already (AD's GUIDs are).
fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// What makes two member values the same: the lower-case objectGUID (borrowed when it is
/// lower-case already, as AD reads make it), or the cloud id of a group this run adds.
fn target_key(t: &GroupTarget) -> Cow<'_, str> {
    match t {
        GroupTarget::Existing { guid, .. } => lower(guid),
        GroupTarget::New { cloud_id, .. } => Cow::Owned(format!("new:{cloud_id}")),
    }
}

fn attr_changes(attrs: &Attrs, existing: &AdGroup) -> Vec<AttrChange> {
    let mut changes = Vec::new();
    for &(attr, ref want) in attrs {
        // Borrowed from the AD snapshot where possible: a steady cycle compares 100,000 groups.
        let have: Cow<[String]> = if attr == "groupType" {
            if let [one] = &want[..] {
                if one.parse() == Ok(existing.group_type) {
                    continue;
                }
            }
            Cow::Owned(vec![existing.group_type.to_string()])
        } else if attr == "managedBy" {
            // AD returns the extended DN; compare by objectGUID.
            Cow::Owned(
                existing
                    .attrs
                    .get("managedby")
                    .into_iter()
                    .flatten()
                    .filter_map(|v| naming::extended_dn_guid(v))
                    .map(|g| format!("<GUID={g}>"))
                    .collect(),
            )
        } else {
            existing.attrs.get(&*attr_key(attr)).map_or(Cow::Borrowed(&[][..]), |v| Cow::Borrowed(v.as_slice()))
        };
        let same = if attr == "proxyAddresses" {
            let mut h = have.to_vec();
            h.sort();
            h.dedup();
            &h == want
        } else {
            *have == **want
        };
        if !same {
            changes.push(AttrChange { attr: attr.to_string(), values: want.clone(), old: have.into_owned() });
        }
    }
    changes
}

/// The key of an attribute in `AdGroup::attrs` (lower case), without copying for the ones
/// the planner writes.
fn attr_key(attr: &str) -> Cow<'_, str> {
    Cow::Borrowed(match attr {
        "sAMAccountName" => "samaccountname",
        "displayName" => "displayname",
        "adminDescription" => "admindescription",
        "msDS-ExternalDirectoryObjectId" => "msds-externaldirectoryobjectid",
        "proxyAddresses" => "proxyaddresses",
        "mailNickname" => "mailnickname",
        _ => return lower(attr),
    })
}

fn skipped(m: &CloudObject, reason: SkipReason) -> Arc<MemberReport> {
    Arc::new(MemberReport {
        via: None,
        cloud_id: m.id.as_str().into(),
        display_name: m.display_name.as_deref().map(Arc::from),
        kind: m.kind().as_str(),
        status: MemberStatus::Skipped,
        reason: Some(reason),
        ad_guid: None,
    })
}

fn resolve_member(
    m: &CloudObject,
    group_id: &str,
    ad: &AdSnapshot,
    state: &State,
    targets: &Map<&str, GroupTarget>,
    cfg: &PlannerConfig,
    p: &mut Plan,
) -> (Arc<MemberReport>, Option<GroupTarget>) {
    let rules = &cfg.rules;
    let written = |m: &CloudObject, obj: Option<&AdObject>| {
        Arc::new(MemberReport {
            via: None,
            cloud_id: m.id.as_str().into(),
            display_name: m.display_name.as_deref().map(Arc::from),
            kind: m.kind().as_str(),
            status: MemberStatus::Written,
            reason: None,
            ad_guid: obj.map(|o| o.guid.clone()),
        })
    };
    let existing = |obj: &AdObject| Some(GroupTarget::Existing { guid: obj.guid.clone(), dn: obj.dn.clone() });
    let mut mismatch = |why: String| {
        p.errors.push(ObjectError {
            cloud_id: group_id.to_string(),
            member_id: Some(m.id.to_string()),
            message: format!(
                "{} {}: {why}; it is not written ({})",
                m.kind().as_str(),
                naming::printable(m.name()),
                SkipReason::AnchorMismatch
            ),
        });
        (skipped(m, SkipReason::AnchorMismatch), None)
    };
    if m.unreadable() {
        return (skipped(m, SkipReason::Unreadable), None);
    }
    match (m.kind(), anchor::ad_object(m, &ad.directory)) {
        (ObjectKind::Device, _) if !cfg.write_devices => (skipped(m, SkipReason::UnsupportedMemberType), None),
        (ObjectKind::User | ObjectKind::Group | ObjectKind::Device, Resolved::Mismatch(why)) => mismatch(why),
        (ObjectKind::Device, Resolved::CloudOnly) => (skipped(m, SkipReason::CloudOnlyDevice), None),
        (ObjectKind::Device, Resolved::NotFound) => (skipped(m, SkipReason::NotFoundInAd), None),
        // Its deviceId is its computer account's objectGUID (facts-2026.md §3): both must agree.
        (ObjectKind::Device, Resolved::Found(obj)) => match m.device_id.as_deref().map(str::trim) {
            Some(d) if d.eq_ignore_ascii_case(&obj.guid) => (written(m, Some(obj)), existing(obj)),
            Some(d) => mismatch(format!(
                "its onPremisesSecurityIdentifier names {}, but its deviceId names another object (objectGUID {})",
                obj.dn,
                naming::printable(d)
            )),
            None => mismatch(format!("it has no deviceId to check {} against", obj.dn)),
        },
        (ObjectKind::User, Resolved::Found(obj)) => (written(m, Some(obj)), existing(obj)),
        (ObjectKind::User, Resolved::CloudOnly) => (skipped(m, SkipReason::CloudOnly), None),
        (ObjectKind::User | ObjectKind::Group, Resolved::NotFound) if anchor::other_forest(m, &ad.forest_domains) => {
            (skipped(m, SkipReason::OtherForest), None)
        }
        (ObjectKind::User, Resolved::NotFound) => (skipped(m, SkipReason::NotFoundInAd), None),
        (ObjectKind::Group, Resolved::Found(obj)) if obj.group_type.is_some_and(group_type::is_domain_local) => {
            p.errors.push(ObjectError {
                cloud_id: group_id.to_string(),
                member_id: Some(m.id.to_string()),
                message: format!(
                    "{UNIVERSAL_CANT_HAVE_LOCAL}: {} is a domain-local group; this member is skipped",
                    obj.dn
                ),
            });
            (skipped(m, SkipReason::DomainLocalGroup), None)
        }
        (ObjectKind::Group, Resolved::Found(obj)) => (written(m, Some(obj)), existing(obj)),
        (ObjectKind::Group, Resolved::NotFound) => (skipped(m, SkipReason::NotFoundInAd), None),
        (ObjectKind::Group, Resolved::CloudOnly) => match nested_target(m, ad, state, targets, rules) {
            Some(t) if m.id != group_id => {
                let mut report = written(m, None);
                if let GroupTarget::Existing { guid, .. } = &t {
                    Arc::make_mut(&mut report).ad_guid = Some(guid.clone());
                }
                (report, Some(t))
            }
            _ => (skipped(m, SkipReason::NestedGroupNotWrittenBack), None),
        },
        _ => (skipped(m, SkipReason::UnsupportedMemberType), None),
    }
}

/// The AD group a nested cloud group is written as: the one this run plans for it, or (a
/// delta cycle that does not plan it) the one its link names while it is in scope.
fn nested_target(
    m: &CloudObject,
    ad: &AdSnapshot,
    state: &State,
    targets: &Map<&str, GroupTarget>,
    rules: &[Rule],
) -> Option<GroupTarget> {
    let id = &m.id;
    targets.get(id.as_str()).cloned().or_else(|| {
        let link = state.links.get(id).filter(|_| decide_with(m, rules).in_scope && !ad.outside.contains_key(id))?;
        Some(GroupTarget::Existing { guid: link.guid.as_str().into(), dn: link.dn.as_str().into() })
    })
}

/// A nested cloud group that is not written back (what `nested = "flatten"` expands).
fn unwritten_cloud_group(
    m: &CloudObject,
    ad: &AdSnapshot,
    state: &State,
    targets: &Map<&str, GroupTarget>,
    rules: &[Rule],
) -> bool {
    m.kind() == ObjectKind::Group
        && matches!(anchor::ad_object(m, &ad.directory), Resolved::CloudOnly)
        && nested_target(m, ad, state, targets, rules).is_none()
}

/// A group's members as planned, each with the nested group it came through (flattening).
type Listed<'a> = Vec<(&'a Arc<CloudObject>, Option<Arc<str>>)>;

/// The members of group `top` with every nested cloud group that is not written back expanded
/// into its members, transitively (each cycle broken once met), in the order met: direct
/// members first, then each expanded group's, with the name of the group they came through.
fn flattened<'a>(
    top: &'a str,
    direct: &'a [Arc<CloudObject>],
    cloud: &'a CloudSnapshot,
    ad: &AdSnapshot,
    state: &State,
    targets: &Map<&str, GroupTarget>,
    cfg: &PlannerConfig,
) -> Result<Listed<'a>, String> {
    let unwritten = |m: &CloudObject| unwritten_cloud_group(m, ad, state, targets, &cfg.rules);
    let mut out: Listed = direct.iter().map(|m| (m, None)).collect();
    let mut visited: Set<&str> = Set::default();
    visited.insert(top);
    let mut queue: std::collections::VecDeque<&Arc<CloudObject>> = direct.iter().filter(|m| unwritten(m)).collect();
    while let Some(g) = queue.pop_front() {
        if !visited.insert(g.id.as_str()) {
            continue;
        }
        let name = naming::printable(if g.name().is_empty() { g.id.as_str() } else { g.name() }).into_owned();
        match cloud.members.get(&g.id) {
            Some(MemberRead::Complete(members)) => {
                let via: Arc<str> = Arc::from(name.as_str());
                for m in members.iter() {
                    out.push((m, Some(via.clone())));
                    if unwritten(m) {
                        queue.push_back(m);
                    }
                }
            }
            Some(MemberRead::Incomplete(e)) => {
                return Err(format!("the members of nested group {name} ({}) could not be read completely ({e})", g.id))
            }
            None => return Err(format!("the members of nested group {name} ({}) were not read", g.id)),
        }
    }
    Ok(out)
}

fn plan_orphan(
    p: &mut Plan,
    id: &str,
    group: &AdGroup,
    cloud: &CloudSnapshot,
    ad: &AdSnapshot,
    decisions: &Map<Cow<str>, Decision>,
    cfg: &PlannerConfig,
) {
    let (why, policy) = match decisions.get(id) {
        Some(d) => (format!("no longer in scope: {}", d.reason), Some((cfg.on_out_of_scope, "on_out_of_scope"))),
        None if cloud.soft_deleted.contains(id) => {
            ("soft-deleted in the cloud (in the recycle bin)".to_string(), Some((cfg.on_soft_delete, "on_soft_delete")))
        }
        None => ("permanently deleted in the cloud".to_string(), None),
    };
    let converted_ou = cfg.converted_ous.iter().any(|ou| naming::dn_is_within(&group.dn, ou));
    let action = match policy {
        Some((OnRemoval::Keep, key)) => {
            format!("kept, no longer updated ([writeback] {key} = \"keep\")")
        }
        // A group in converted_ous was AD's before writeback took it over: given back, never deleted.
        _ if converted_ou => {
            give_back(p, group, ad, &format!("{why}; in [writeback] converted_ous, so given back, not deleted"));
            return;
        }
        _ => {
            p.operations.push(Operation::Delete {
                cloud_id: id.into(),
                guid: group.guid.clone(),
                dn: group.dn.to_string(),
                reason: why.clone(),
            });
            "delete".to_string()
        }
    };
    let name = group.attrs.get("displayname").and_then(|v| v.first()).cloned().unwrap_or_default();
    p.groups.push(GroupReport {
        cloud_id: id.into(),
        display_name: name,
        in_scope: false,
        reason: why,
        dn: Some(group.dn.to_string()),
        group_type: Some(group.group_type),
        action,
        members: vec![],
    });
}

/// Converted groups (SOA), before anything else is planned: the original AD group of a converted
/// cloud group is taken over in place (it becomes owned, named as it is), one already taken over
/// keeps its name, one given back to AD is released, and one that may not be taken over is
/// reported and dropped (no second group beside it). Returns the owned groups with the ones
/// taken over.
fn converted<'a>(
    p: &mut Plan,
    desired: &mut Vec<Desired<'a>>,
    cloud: &'a CloudSnapshot,
    ad: &'a AdSnapshot,
    mut owned: Map<&'a str, &'a AdGroup>,
    released: &mut Set<&'a str>,
    cfg: &PlannerConfig,
) -> Map<&'a str, &'a AdGroup> {
    let mut dropped: Set<usize> = Set::default();
    let keep_names = !cfg.rename_converted;
    for (i, d) in desired.iter_mut().enumerate() {
        let id = d.id.clone();
        let id: &str = &id;
        let conversion = convert::conversion(d.group, cloud);
        // Taken over before (by SID, or by hand with `adopt`): named as it was in AD.
        if let Some(g) = owned.get(id).filter(|g| keep_names && convert::is_taken_over(g, conversion, cfg)) {
            d.keep_name(g);
        }
        match (conversion, owned.get(id).copied()) {
            (Conversion::None, _) | (Conversion::Converted(_), Some(_)) => {}
            (Conversion::Converted(sid), None) => match convert::may_take_over(id, sid, ad.originals.get(id), cfg) {
                Ok(None) => {}
                Ok(Some(g)) => {
                    let Some((key, _)) = ad.originals.get_key_value(id) else { continue };
                    p.operations.push(Operation::Adopt {
                        cloud_id: id.into(),
                        guid: g.guid.clone(),
                        dn: g.dn.to_string(),
                        sid: sid.to_string(),
                        marker: convert::marker_values(id, &ad.schema),
                    });
                    if keep_names {
                        d.keep_name(g);
                    }
                    d.adopted = Some(sid.to_string());
                    owned.insert(key.as_str(), g);
                }
                Err(message) => {
                    p.errors.push(ObjectError { cloud_id: id.to_string(), member_id: None, message: message.clone() });
                    p.groups.push(report(d.group, id, d.decision, None, &format!("not written: {message}"), vec![]));
                    dropped.insert(i);
                }
            },
            (Conversion::GivenBack(sid), Some(g)) if convert::same_sid(g, sid) => {
                let why = "given back to AD (onPremisesSyncBehavior.isCloudManaged = false)";
                give_back(p, g, ad, why);
                if let Some((key, _)) = owned.get_key_value(id) {
                    released.insert(key);
                }
                dropped.insert(i);
            }
            (Conversion::GivenBack(_), written) => {
                let why = match written {
                    Some(g) => format!(
                        "given back to AD (onPremisesSyncBehavior.isCloudManaged = false); the group writeback \
                         wrote for it, {}, is not its AD group: left as it is, no longer updated",
                        g.dn
                    ),
                    None => "given back to AD (onPremisesSyncBehavior.isCloudManaged = false): AD manages it".into(),
                };
                p.groups.push(report(d.group, id, d.decision, None, &format!("not written: {why}"), vec![]));
                dropped.insert(i);
            }
            // Managed already: as it was. Not yet: not taken over on a guess.
            (Conversion::Unknown(_), Some(_)) => {}
            (Conversion::Unknown(sid), None) => {
                let message = format!(
                    "converted from AD (SID {sid}), but whether it is cloud-managed could not be read from Graph \
                     this run; nothing is written (a later cycle takes it over)"
                );
                p.errors.push(ObjectError { cloud_id: id.to_string(), member_id: None, message: message.clone() });
                p.groups.push(report(d.group, id, d.decision, None, &format!("not written: {message}"), vec![]));
                dropped.insert(i);
            }
        }
    }
    let mut i = 0;
    desired.retain(|_| {
        i += 1;
        !dropped.contains(&(i - 1))
    });
    owned
}

/// Stops managing an owned group: its marker is removed; the group and its members stay.
fn give_back(p: &mut Plan, group: &AdGroup, ad: &AdSnapshot, why: &str) {
    p.operations.push(Operation::Release {
        cloud_id: group.cloud_id.clone(),
        guid: group.guid.clone(),
        dn: group.dn.to_string(),
        marker: convert::marker_attributes(&ad.schema).iter().map(|a| a.to_string()).collect(),
        reason: why.to_string(),
    });
    let name = group.attrs.get("displayname").and_then(|v| v.first()).cloned().unwrap_or_default();
    p.groups.push(GroupReport {
        cloud_id: group.cloud_id.clone(),
        display_name: name,
        in_scope: false,
        reason: why.to_string(),
        dn: Some(group.dn.to_string()),
        group_type: Some(group.group_type),
        action: "release: marker removed, the group and its members kept".into(),
        members: vec![],
    });
}

fn check_thresholds(p: &mut Plan, cfg: &PlannerConfig) {
    let s = &p.summary;
    let (allow, approved) = (&cfg.allow, &cfg.allow.approved);
    let past = if !allow.deletes_ok(s.deletes) && s.deletes > cfg.delete_threshold {
        Some((
            Threshold::Deletes,
            s.deletes,
            "delete",
            "AD groups",
            "delete_threshold",
            cfg.delete_threshold,
            approved.deletes,
        ))
    } else if !allow.member_removals_ok(s.member_removes) && s.member_removes > cfg.member_removal_threshold {
        let t = cfg.member_removal_threshold;
        Some((
            Threshold::MemberRemovals,
            s.member_removes,
            "remove",
            "members",
            "member_removal_threshold",
            t,
            approved.member_removals,
        ))
    } else if !allow.creates_ok(s.adds) && s.adds > cfg.create_threshold {
        Some((
            Threshold::Creates,
            s.adds,
            "create",
            "AD groups",
            "create_threshold",
            cfg.create_threshold,
            approved.creates,
        ))
    } else {
        None
    };
    p.blocked = past.map(|(threshold, count, verb, what, key, limit, approved)| {
        let approved = approved.map(|a| format!(" and the {a} approved")).unwrap_or_default();
        let mut b = Blocked { threshold, count, message: String::new() };
        b.message = format!(
            "this run would {verb} {count} {what}, more than [writeback] {key} = {limit}{approved}; nothing \
             was changed. Check the plan (writeback plan), then approve it: `{}` lets the next cycle \
             (the daemon's too) go ahead; or, where no daemon runs, `writeback sync {}`",
            b.approve_command(),
            threshold.sync_option()
        );
        b
    });
}

/// Whether a group's removals are held (`member_removal_percent`): more than
/// [`GROUP_REMOVALS_MIN`] and more than that share of the members it has in AD.
pub(crate) fn removals_held(group: &str, removes: usize, members: usize, cfg: &PlannerConfig) -> bool {
    !cfg.allow.group_removals_ok(group, removes)
        && removes > GROUP_REMOVALS_MIN
        && removes * 100 > cfg.member_removal_percent * members
}
