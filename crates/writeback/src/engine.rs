//! Reading what a cycle plans from: the cloud's groups with their members, the owned groups
//! in AD, the members looked up in AD, and the state's links checked against AD. `plan` plans
//! from it without writing; `cycle` applies and records.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use writeback_ad::AdConn;
use writeback_core::planner::decisions;
use writeback_core::MappedAttribute;
use writeback_core::{
    member_anchors, members_known, members_to_look_up, AdObject, AdSnapshot, Allow, Anchor, CloudId, CloudObject,
    CloudSnapshot, MemberRead, ObjectGuid, OwnedMembers, Plan, PlannerConfig, State,
};
use writeback_graph::GraphClient;
use writeback_store::Store;

use crate::config::Config;
use crate::early::Early;
use crate::error::CycleError;
use crate::lead::Lead;
use crate::progress;

pub struct Snapshot {
    pub cloud: CloudSnapshot,
    pub ad: AdSnapshot,
}

/// Reads everything a full cycle needs. Graph and LDAP reads overlap where they can.
pub async fn read(graph: &GraphClient, ad: &mut AdConn, ous: &[String], cfg: &Config) -> Result<Snapshot, CycleError> {
    Ok(read_with(graph, ad, ous, cfg, None).await?.0)
}

/// What a full cycle that writes needs to start adds while it reads (see `early`).
pub(crate) struct EarlySetup<'a> {
    pub(crate) cfg: &'a Config,
    pub(crate) state: State,
    pub(crate) planner: PlannerConfig,
    pub(crate) lead: &'a Lead,
}

/// `read`, and with `early`, adds start as soon as their part is read when the managed OUs
/// hold no owned group (and the tenant has more than one part).
pub(crate) async fn read_with(
    graph: &GraphClient,
    ad: &mut AdConn,
    ous: &[String],
    cfg: &Config,
    early: Option<EarlySetup<'_>>,
) -> Result<(Snapshot, Option<Early>), CycleError> {
    let (rules, write_owners) = (&cfg.rules, cfg.writeback.write_owners);
    progress::phase("reading the cloud's groups and the target OU");
    let (groups, owned) = tokio::join!(graph.list_groups(), ad.read_owned_groups(ous));
    let (groups, rejected) = groups?;
    let owned = owned?;
    let cloud = CloudSnapshot { groups, rejected, ..Default::default() };
    let in_scope: Vec<CloudId> =
        decisions(&cloud, rules).into_iter().filter(|(_, d)| d.in_scope).map(|(id, _)| id).collect();
    tracing::info!(
        groups = cloud.groups.len(),
        in_scope = in_scope.len(),
        owned_in_ad = owned.len(),
        "read the group lists"
    );
    // Owners are read after all members (managedBy is in the add): no early adds with them.
    // Every group in scope is an add here: more than create_threshold of them and the whole
    // plan must be seen first (it stops before writing).
    let mut early = match early {
        Some(e)
            if owned.is_empty()
                && e.state.links.is_empty()
                && !write_owners
                && in_scope.len() > READ_PART
                && (e.planner.allow.creates || in_scope.len() <= e.planner.create_threshold) =>
        {
            e.lead.check().await.map_err(CycleError::Lock)?;
            tracing::info!("no owned group in the managed OUs yet: groups are added while the rest is read");
            let mut conn = AdConn::connect(&e.cfg.ad()?).await?;
            conn.set_gate(e.lead.gate());
            Some(Early::start(conn, ous.to_vec(), e.state, e.planner))
        }
        _ => None,
    };
    progress::phase(&format!("reading the members of {} groups", in_scope.len()));
    match read_members(graph, ad, cloud, owned, &in_scope, cfg, early.as_mut()).await {
        Ok(snap) => Ok((snap, early)),
        // Adds may have been written: wait for them, and say so.
        Err(why) => match early {
            Some(e) => Err(why.noted(e.abandon().await)),
            None => Err(why),
        },
    }
}

/// The rest of `read_with`, once the group lists are read.
async fn read_members(
    graph: &GraphClient,
    ad: &mut AdConn,
    mut cloud: CloudSnapshot,
    owned: Vec<writeback_core::AdGroup>,
    in_scope: &[CloudId],
    cfg: &Config,
    early: Option<&mut Early>,
) -> Result<Snapshot, CycleError> {
    let by_id: HashMap<CloudId, &CloudObject> = cloud.groups.iter().map(|g| (g.id.clone(), g)).collect();
    let devices = cfg.writeback.write_devices;
    let early = early.map(|e| (e, &by_id));
    let (members, found, tried) = members_and_lookups(graph, ad, in_scope, &owned, devices, early).await?;
    drop(by_id);
    cloud.members = members;
    complete_nested(graph, &mut cloud, cfg).await;
    flatten_reads(graph, &mut cloud, cfg).await;
    if cfg.writeback.write_owners {
        cloud.owners = graph.owners_of(in_scope).await;
    }

    // The recycle bin matters only for owned groups the cloud no longer lists.
    let listed: BTreeSet<&str> = cloud.groups.iter().map(|g| g.id.as_str()).collect();
    if owned.iter().any(|g| !listed.contains(g.cloud_id.as_str())) {
        cloud.soft_deleted = graph.soft_deleted_groups().await?;
    }
    let ad_snap = resolve(ad, &cloud, owned, devices, (found, tried)).await?;
    Ok(Snapshot { cloud, ad: ad_snap })
}

/// Members looked up in AD so far: (found, every anchor asked for).
type Lookups = (HashMap<Anchor, AdObject>, HashSet<Anchor>);

/// Groups per part of `members_and_lookups`.
const READ_PART: usize = 500;

/// Reads the members of `ids` in parts of `READ_PART` groups, and looks up each part's new
/// members in AD while Graph answers for the next part: the two waits overlap instead of adding
/// up (a 10,000-group tenant spent a fifth of its full sync reading and looking up).
/// With `early`, each part is handed over for its adds once its members are looked up.
async fn members_and_lookups(
    graph: &GraphClient,
    ad: &mut AdConn,
    ids: &[CloudId],
    owned: &[writeback_core::AdGroup],
    devices: bool,
    mut early: Option<(&mut Early, &HashMap<CloudId, &CloudObject>)>,
) -> Result<(HashMap<CloudId, MemberRead>, HashMap<Anchor, AdObject>, HashSet<Anchor>), CycleError> {
    let (mut members, mut shared) = (HashMap::new(), HashMap::new());
    let (mut found, mut tried): Lookups = Default::default();
    let mut pending: Vec<Anchor> = Vec::new();
    let mut looking_up: &[CloudId] = &[];
    // Members of owned groups are known from their member values.
    let owned_members = OwnedMembers::new(owned).with_devices(devices);
    for part in ids.chunks(READ_PART) {
        let lookup = std::mem::take(&mut pending);
        let (sink, pages) = tokio::sync::mpsc::unbounded_channel();
        let shared = &mut shared;
        let read = async move {
            let read = graph.members_of_sharing(part, shared, Some(&sink)).await;
            drop(sink); // ends `pages`
            read
        };
        let (read, looked) = tokio::join!(read, lookup_while_read(ad, &lookup, pages, &owned_members, &mut tried));
        found.extend(looked?);
        if let Some((e, groups)) = early.as_mut() {
            e.part(groups, looking_up, &members, &found);
        }
        let part_read = CloudSnapshot { members: read, ..Default::default() };
        pending = untried(member_anchors(&part_read, &owned_members), &mut tried);
        for (anchor, obj) in members_known(&part_read, &owned_members) {
            found.entry(anchor).or_insert(obj);
        }
        members.extend(part_read.members);
        looking_up = part;
    }
    found.extend(ad.resolve_members(&pending).await?);
    if let Some((e, groups)) = early.as_mut() {
        e.part(groups, looking_up, &members, &found);
    }
    Ok((members, found, tried))
}

/// The anchors not asked for yet, marked as asked.
fn untried(anchors: impl IntoIterator<Item = Anchor>, tried: &mut HashSet<Anchor>) -> Vec<Anchor> {
    anchors.into_iter().filter(|a| tried.insert(a.clone())).collect()
}

/// Looks up `first`, then the members of each page Graph hands over while it reads (the later
/// pages of large groups), until the read ends: the DC answers while Graph does.
async fn lookup_while_read(
    ad: &mut AdConn,
    first: &[Anchor],
    mut pages: tokio::sync::mpsc::UnboundedReceiver<Vec<Arc<CloudObject>>>,
    owned: &OwnedMembers<'_>,
    tried: &mut HashSet<Anchor>,
) -> Result<HashMap<Anchor, AdObject>, writeback_ad::AdError> {
    let mut found = ad.resolve_members(first).await?;
    while let Some(page) = pages.recv().await {
        let mut got = vec![page];
        while let Ok(more) = pages.try_recv() {
            got.push(more);
        }
        let anchors = untried(members_to_look_up(got.iter().flatten().map(|m| &**m), owned), tried);
        found.extend(ad.resolve_members(&anchors).await?);
    }
    Ok(found)
}

/// Looks up the members of the snapshot's groups in AD, but for those already asked for.
pub(crate) async fn resolve(
    ad: &mut AdConn,
    cloud: &CloudSnapshot,
    owned: Vec<writeback_core::AdGroup>,
    devices: bool,
    (found, tried): Lookups,
) -> Result<AdSnapshot, CycleError> {
    let owned_members = OwnedMembers::new(&owned).with_devices(devices);
    let known = members_known(cloud, &owned_members);
    let members: Vec<Anchor> =
        member_anchors(cloud, &owned_members).into_iter().filter(|a| !tried.contains(a)).collect();
    drop(owned_members);
    progress::phase(&format!("finding {} members in AD", members.len()));
    let mut directory = ad.resolve_members(&members).await?;
    tracing::info!(
        anchors = members.len() + tried.len(),
        resolved = directory.len() + found.len(),
        already_members = known.len(),
        "resolved members in AD"
    );
    directory.extend(found);
    // What AD answered for a lookup (with the object's class) wins over the shortcut.
    for (anchor, obj) in known {
        directory.entry(anchor).or_insert(obj);
    }
    // Nestings into protected groups change the protected group, not ours: looked up every
    // cycle, from the groups this cycle plans (read with their memberOf) upwards.
    let protected = ad.protected_nesting(&owned).await?;
    if !protected.is_empty() {
        tracing::warn!(
            groups = protected.len(),
            "owned groups nested into protected groups: their members are held back"
        );
    }
    let outside = BTreeMap::new();
    let forest_domains = ad.forest_domains.clone();
    let originals = BTreeMap::new();
    Ok(AdSnapshot {
        schema: ad.schema,
        groups: owned,
        directory,
        protected,
        outside,
        originals,
        forest_domains,
        sam_owners: Default::default(),
    })
}

/// Rules that read properties a member object does not carry (classification, extensions …)
/// must decide a nested group from the group itself: each nested cloud group in the member
/// lists becomes its full object — from this cycle's groups, or read by id. A nested group that
/// cannot be read leaves its parents' member lists incomplete (their groups are left as they
/// are this run: a scope decided from missing properties could remove a nesting).
pub(crate) async fn complete_nested(graph: &GraphClient, cloud: &mut CloudSnapshot, cfg: &Config) {
    use writeback_core::model::ObjectKind;
    if cfg.rules.iter().all(|r| r.properties().is_empty()) {
        return;
    }
    let as_member =
        |g: &CloudObject| Arc::new(CloudObject { odata_type: Some("#microsoft.graph.group".into()), ..g.clone() });
    let mut full: HashMap<CloudId, Arc<CloudObject>> =
        cloud.groups.iter().map(|g| (g.id.clone(), as_member(g))).collect();
    let nested = |m: &CloudObject| m.kind() == ObjectKind::Group && !m.is_synced();
    let mut wanted: Vec<CloudId> =
        cloud.complete_members().filter(|m| nested(m) && !full.contains_key(&m.id)).map(|m| m.id.clone()).collect();
    wanted.sort();
    wanted.dedup();
    let (found, missing, failed) = graph.groups_by_id(&wanted).await;
    for g in &found {
        full.insert(g.id.clone(), as_member(g));
    }
    // Not found (deleted since the member read) is as unknown as a failed read.
    let failed: HashSet<CloudId> = failed.into_iter().map(|(id, _)| CloudId::new(id)).chain(missing).collect();
    for read in cloud.members.values_mut() {
        let MemberRead::Complete(list) = read else { continue };
        if let Some(m) = list.iter().find(|m| nested(m) && failed.contains(&m.id)) {
            let why = format!("nested group {} could not be read to decide its scope", m.id);
            *read = MemberRead::Incomplete(why);
            continue;
        }
        for m in list.iter_mut().filter(|m| nested(m)) {
            if let Some(f) = full.get(&m.id) {
                *m = f.clone();
            }
        }
    }
}

/// How deep `nested = "flatten"` follows nested groups (a cycle ends sooner: groups read once).
const FLATTEN_DEPTH: usize = 16;

/// With `nested = "flatten"`: the members of every nested cloud group that is not in scope,
/// and of the ones nested in those, so the planner can write their transitive members. A read
/// that fails is `Incomplete`: the planner then leaves the groups that nest it as they are.
pub(crate) async fn flatten_reads(graph: &GraphClient, cloud: &mut CloudSnapshot, cfg: &Config) {
    if cfg.writeback.nested != writeback_core::Nested::Flatten {
        return;
    }
    let planned = decisions(cloud, &cfg.rules);
    let in_scope = |m: &CloudObject| match planned.get(&m.id) {
        Some(d) => d.in_scope,
        None => writeback_core::scope::decide_with(m, &cfg.rules).in_scope,
    };
    for _ in 0..FLATTEN_DEPTH {
        let mut wanted: Vec<CloudId> = cloud
            .complete_members()
            .filter(|m| m.kind() == writeback_core::model::ObjectKind::Group && !m.is_synced() && !in_scope(m))
            .filter(|m| !cloud.members.contains_key(&m.id))
            .map(|m| m.id.clone())
            .collect();
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            return;
        }
        tracing::info!(groups = wanted.len(), "reading nested groups to flatten");
        let read = graph.members_of(&wanted).await;
        cloud.members.extend(read);
        // The groups these nest are decided from their full objects too, before the next round.
        complete_nested(graph, cloud, cfg).await;
    }
}

/// The AD objects holding the sAMAccountNames `[[mappings]]` give the groups in scope (so the
/// planner never takes one another object holds).
async fn mapped_sam_owners(ad: &mut AdConn, snap: &mut Snapshot, cfg: &Config) -> Result<(), CycleError> {
    let named =
        |m: &writeback_core::Mapping| matches!(m.attribute, MappedAttribute::SamAccountName | MappedAttribute::Cn);
    if !cfg.mappings.iter().any(named) {
        return Ok(());
    }
    let in_scope = decisions(&snap.cloud, &cfg.rules);
    let mut names: Vec<String> = snap
        .cloud
        .groups
        .iter()
        .filter(|g| in_scope.get(&g.id).is_some_and(|d| d.in_scope))
        .filter_map(|g| writeback_core::mapping::mapped_sam(g, &cfg.mappings))
        .collect();
    names.sort();
    names.dedup();
    snap.ad.sam_owners = ad.sam_owners(&names).await?;
    Ok(())
}

/// A mapping to an attribute this AD's schema lacks stops the command (exit 2) before anything
/// is read: extensionAttribute1..15 come with Exchange's schema extension.
fn mappings_fit(cfg: &Config, ad: &AdConn) -> Result<(), CycleError> {
    for (i, m) in cfg.mappings.iter().enumerate() {
        if matches!(m.attribute, MappedAttribute::ExtensionAttribute(_)) && !ad.schema.extension_attributes {
            return Err(CycleError::Config(format!(
                "[[mappings]] #{}: attribute {} is not in this AD's schema (extensionAttribute1..15 come with \
                 Exchange's schema extension); remove the mapping or extend the schema",
                i + 1,
                m.attribute.ldap_name()
            )));
        }
    }
    Ok(())
}

pub async fn connect(cfg: &Config) -> Result<(GraphClient, AdConn), CycleError> {
    let graph_cfg = cfg.graph()?;
    if let Some(t) = graph_cfg.expires_at() {
        metrics::gauge!("writeback_credential_expiry_timestamp_seconds").set(t as f64);
    }
    let graph = GraphClient::new(graph_cfg)?;
    let ad = AdConn::connect(&cfg.ad()?).await?;
    mappings_fit(cfg, &ad)?;
    Ok((graph, ad))
}

/// What the planner may take from the state's links, checked against AD. A link the read did
/// not confirm (the planner uses it for a group in scope it did not find, or for a nested
/// group it does not plan) is read by objectGUID: an owned group in a managed OU keeps its link
/// (with where it is now); one outside them is reported, never recreated beside itself
/// (`ad.outside`) nor nested; an object that is not that group loses the link; a link to an
/// object that is gone stays (the planner says the group is created again). Returns the state
/// to plan with.
pub(crate) async fn check_links(
    ad: &mut AdConn,
    snap: &mut Snapshot,
    state: &State,
    cfg: &Config,
    ous: &[String],
) -> Result<State, CycleError> {
    mapped_sam_owners(ad, snap, cfg).await?;
    let read: HashSet<&str> = snap.ad.groups.iter().map(|g| g.cloud_id.as_str()).collect();
    let in_scope: BTreeSet<CloudId> =
        decisions(&snap.cloud, &cfg.rules).into_iter().filter(|(_, d)| d.in_scope).map(|(id, _)| id).collect();
    let nested = snap
        .cloud
        .members
        .values()
        .filter_map(|m| match m {
            MemberRead::Complete(m) => Some(m),
            MemberRead::Incomplete(_) => None,
        })
        .flatten()
        .filter(|m| m.kind() == writeback_core::model::ObjectKind::Group && !m.is_synced())
        .map(|m| m.id.clone());
    let unseen: BTreeMap<CloudId, ObjectGuid> = in_scope
        .iter()
        .cloned()
        .chain(nested)
        .filter(|id| !read.contains(id.as_str()))
        .filter_map(|id| state.links.get(&id).map(|l| (id, l.guid.clone())))
        .collect();
    let mut checked = state.clone();
    if unseen.is_empty() {
        return Ok(checked);
    }
    let unseen: Vec<(CloudId, ObjectGuid)> = unseen.into_iter().collect();
    let (ours, not_ours) = ad.check_links(&unseen).await?;
    for id in not_ours {
        checked.links.remove(&id);
    }
    for (id, guid, dn) in ours {
        if ous.iter().any(|ou| dn.is_within(ou)) {
            checked.links.insert(id, writeback_core::Link { guid, dn });
        } else {
            checked.links.remove(&id);
            if in_scope.contains(&id) {
                tracing::warn!(cloud_id = %id, %dn, "a group writeback wrote is outside the managed OUs: reported, not \
                    recreated");
                snap.ad.outside.insert(id, dn.to_string());
            }
        }
    }
    Ok(checked)
}

/// The state from the database, without writing to it (for `plan`).
pub async fn state_read_only(cfg: &Config) -> Result<State, CycleError> {
    Ok(match Store::open_read_only(&cfg.state()?).await? {
        Some(s) => s.state().await?,
        None => State::default(),
    })
}

/// A plan of a full cycle against the current cloud and AD, with the approvals the next cycle
/// would use (so `plan` after `approve` says the sync goes ahead); writes nothing anywhere.
pub async fn plan(cfg: &Config, allow: Allow) -> Result<(Plan, Snapshot), CycleError> {
    let state = state_read_only(cfg).await?;
    let approved = match Store::open_read_only(&cfg.state()?).await? {
        Some(s) => writeback_store::approved(&s.open_approvals().await?),
        None => Default::default(),
    };
    let allow = Allow { approved, ..allow };
    let (graph, mut ad) = connect(cfg).await?;
    let ous = cfg.managed_ous(&state);
    let snap = read(&graph, &mut ad, &ous, cfg).await;
    progress::done();
    let mut snap = snap?;
    let checked = check_links(&mut ad, &mut snap, &state, cfg, &ous).await?;
    crate::converted::read(&graph, &mut ad, &mut snap, cfg).await?;
    ad.close().await;
    let plan = writeback_core::plan(&snap.cloud, &snap.ad, &checked, &cfg.planner(allow));
    Ok((plan, snap))
}

/// What `show` found for a name.
pub enum Shown {
    /// The plan of the groups it names (one, or several with that display name).
    Groups(Box<Plan>),
    /// No group has that id or name; these have it in their name: (id, display name).
    Candidates(Vec<(CloudId, String)>),
}

/// Groups whose display name holds `needle`, listed as candidates at most.
const MAX_CANDIDATES: usize = 20;

/// The groups a name given by an administrator stands for.
pub enum Named {
    /// The group with that id, or every group with that display name (in any case).
    Groups(Vec<CloudObject>),
    /// None has it; these have it in their display name: (id, display name).
    Candidates(Vec<(CloudId, String)>),
}

/// The groups `needle` names: an object id, or a display name in any case. A name is asked of
/// Graph with a filter first; only when that finds nothing (Graph compares with or without
/// case) is the tenant's group list read, to match without case and to list candidates.
pub async fn find_named(graph: &GraphClient, needle: &str) -> Result<Named, CycleError> {
    let needle = needle.trim();
    if writeback_core::naming::is_guid(needle) {
        let id = CloudId::new(needle);
        let (found, _, failed) = graph.groups_by_id(std::slice::from_ref(&id)).await;
        if let Some((_, why)) = failed.first() {
            return Err(CycleError::Other(format!("reading group {id}: {why}")));
        }
        return Ok(if found.is_empty() { Named::Candidates(Vec::new()) } else { Named::Groups(found) });
    }
    let lower = needle.to_lowercase();
    let same = |g: &CloudObject| g.name().to_lowercase() == lower;
    let named: Vec<CloudObject> = graph.groups_named(needle).await?.into_iter().filter(same).collect();
    if !named.is_empty() {
        return Ok(Named::Groups(named));
    }
    let (all, _) = graph.list_groups().await?;
    let (named, others): (Vec<CloudObject>, Vec<CloudObject>) = all.into_iter().partition(same);
    if !named.is_empty() {
        return Ok(Named::Groups(named));
    }
    let mut near: Vec<(CloudId, String)> = others
        .into_iter()
        .filter(|g| g.name().to_lowercase().contains(&lower))
        .map(|g| (g.id.clone(), g.name().to_string()))
        .collect();
    near.sort_by(|a, b| a.1.cmp(&b.1));
    near.truncate(MAX_CANDIDATES);
    Ok(Named::Candidates(near))
}

/// The object ids of the groups `needles` name, each named group found, or a usage error that
/// says which name found none (with the groups that have it in their name).
pub async fn ids_named(cfg: &Config, needles: &[String]) -> Result<Vec<CloudId>, CycleError> {
    let graph = GraphClient::new(cfg.graph()?)?;
    let mut ids = Vec::new();
    for needle in needles {
        match find_named(&graph, needle).await? {
            // Anyone may make a group of the same name: a name that is not unique is refused.
            Named::Groups(groups) if groups.len() > 1 => {
                let list: Vec<String> = groups
                    .iter()
                    .map(|g| format!("{} ({})", writeback_core::naming::printable(g.name()), g.id))
                    .collect();
                return Err(CycleError::Config(format!(
                    "{} groups are named '{}': give the object id of the one to sync: {}",
                    groups.len(),
                    needle.trim(),
                    list.join(", ")
                )));
            }
            Named::Groups(groups) => ids.extend(groups.into_iter().map(|g| g.id)),
            Named::Candidates(near) => {
                let hint = if near.is_empty() {
                    String::new()
                } else {
                    let list: Vec<String> = near
                        .iter()
                        .map(|(id, name)| format!("{} ({id})", writeback_core::naming::printable(name)))
                        .collect();
                    format!("; groups with it in their name: {}", list.join(", "))
                };
                return Err(CycleError::Config(format!(
                    "no cloud group has the id or display name '{}'{hint}",
                    needle.trim()
                )));
            }
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// The plan of only the groups `needle` names (an object id, or a display name in any case):
/// their members are read, not the tenant's, so it answers at once in a tenant of 10,000
/// groups. Nested groups are found through their links, as in a delta cycle. Writes nothing.
pub async fn plan_groups(cfg: &Config, needle: &str) -> Result<Shown, CycleError> {
    let state = state_read_only(cfg).await?;
    let (graph, mut ad) = connect(cfg).await?;
    let ous = cfg.managed_ous(&state);
    let (groups, ids) = match find_named(&graph, needle).await? {
        Named::Groups(groups) => {
            let ids: Vec<CloudId> = groups.iter().map(|g| g.id.clone()).collect();
            (groups, ids)
        }
        Named::Candidates(near) => return Ok(Shown::Candidates(near)),
    };
    let mut cloud = CloudSnapshot { groups, ..Default::default() };
    let in_scope: Vec<CloudId> =
        decisions(&cloud, &cfg.rules).into_iter().filter(|(_, d)| d.in_scope).map(|(id, _)| id).collect();
    cloud.members = graph.members_of(&in_scope).await;
    complete_nested(&graph, &mut cloud, cfg).await;
    flatten_reads(&graph, &mut cloud, cfg).await;
    if cfg.writeback.write_owners {
        cloud.owners = graph.owners_of(&in_scope).await;
    }
    let owned = ad.read_owned_groups_by_ids(&ous, &ids).await?;
    let ad_snap = resolve(&mut ad, &cloud, owned, cfg.writeback.write_devices, Default::default()).await?;
    let mut snap = Snapshot { cloud, ad: ad_snap };
    let checked = check_links(&mut ad, &mut snap, &state, cfg, &ous).await?;
    crate::converted::read(&graph, &mut ad, &mut snap, cfg).await?;
    ad.close().await;
    Ok(Shown::Groups(Box::new(writeback_core::plan(&snap.cloud, &snap.ad, &checked, &cfg.planner(Allow::default())))))
}
