//! One cycle: read the cloud and AD, plan, and (for `sync`) apply and record.
//!
//! A full cycle reads everything. A delta cycle asks Graph's delta queries and AD's
//! `uSNChanged` what changed since the last cycle, reads those groups completely, and plans
//! them with the same planner. Watermarks (delta links, USN) are stored only after the
//! cycle's changes are applied or recorded, so a failed cycle is simply repeated.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use writeback_ad::{AdConn, ApplyReport};
use writeback_core::plan::Operation;
use writeback_core::planner::decisions;
use writeback_core::scope::decide_with;
use writeback_core::{
    member_anchors, members_known, members_to_look_up, AdObject, AdSnapshot, Allow, Anchor, CloudObject, CloudSnapshot,
    GroupReport, MemberRead, ObjectError, OwnedMembers, Plan, PlannerConfig, Rule, RunKind, RunStatus, State, Summary,
};
use writeback_graph::{is_expired, Collection, GraphClient};
use writeback_store::{Store, Watermarks};

use crate::config::Config;
use crate::confirm;
use crate::early::{Early, Finished};
use crate::error::CycleError;
use crate::lock::StateLock;
use crate::progress;

/// Graph forgets delta tokens for directory objects after 7 days.
const DELTA_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct Snapshot {
    pub cloud: CloudSnapshot,
    pub ad: AdSnapshot,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Reads everything a full cycle needs. Graph and LDAP reads overlap where they can.
pub async fn read(
    graph: &GraphClient,
    ad: &mut AdConn,
    ous: &[String],
    rules: &[Rule],
    write_owners: bool,
) -> Result<Snapshot, CycleError> {
    Ok(read_with(graph, ad, ous, rules, write_owners, None).await?.0)
}

/// What a full cycle that writes needs to start adds while it reads (see `early`).
struct EarlySetup<'a> {
    cfg: &'a Config,
    state: State,
    planner: PlannerConfig,
    lock: &'a StateLock,
}

/// `read`, and with `early`, adds start as soon as their part is read when the managed OUs
/// hold no owned group (and the tenant has more than one part).
async fn read_with(
    graph: &GraphClient,
    ad: &mut AdConn,
    ous: &[String],
    rules: &[Rule],
    write_owners: bool,
    early: Option<EarlySetup<'_>>,
) -> Result<(Snapshot, Option<Early>), CycleError> {
    progress::phase("reading the cloud's groups and the target OU");
    let (groups, owned) = tokio::join!(graph.list_groups(), ad.read_owned_groups(ous));
    let (groups, rejected) = groups?;
    let owned = owned?;
    let cloud = CloudSnapshot { groups, rejected, ..Default::default() };
    let in_scope: Vec<String> =
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
            e.lock.check().map_err(CycleError::Lock)?;
            tracing::info!("no owned group in the managed OUs yet: groups are added while the rest is read");
            let conn = AdConn::connect(&e.cfg.ad()?).await?;
            Some(Early::start(conn, ous.to_vec(), e.state, e.planner, e.lock.watch()))
        }
        _ => None,
    };
    progress::phase(&format!("reading the members of {} groups", in_scope.len()));
    match read_members(graph, ad, cloud, owned, &in_scope, write_owners, early.as_mut()).await {
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
    in_scope: &[String],
    write_owners: bool,
    early: Option<&mut Early>,
) -> Result<Snapshot, CycleError> {
    let by_id: HashMap<String, &CloudObject> = cloud.groups.iter().map(|g| (g.id.to_ascii_lowercase(), g)).collect();
    let (members, found, tried) = members_and_lookups(graph, ad, in_scope, &owned, early.map(|e| (e, &by_id))).await?;
    drop(by_id);
    cloud.members = members;
    if write_owners {
        cloud.owners = graph.owners_of(in_scope).await;
    }

    // The recycle bin matters only for owned groups the cloud no longer lists.
    let listed: BTreeSet<&str> = cloud.groups.iter().map(|g| g.id.as_str()).collect();
    if owned.iter().any(|g| !listed.contains(g.cloud_id.as_str())) {
        cloud.soft_deleted = graph.soft_deleted_groups().await?;
    }
    let ad_snap = resolve(ad, &cloud, owned, (found, tried)).await?;
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
    ids: &[String],
    owned: &[writeback_core::AdGroup],
    mut early: Option<(&mut Early, &HashMap<String, &CloudObject>)>,
) -> Result<(HashMap<String, MemberRead>, HashMap<Anchor, AdObject>, HashSet<Anchor>), CycleError> {
    let (mut members, mut shared) = (HashMap::new(), HashMap::new());
    let (mut found, mut tried): Lookups = Default::default();
    let mut pending: Vec<Anchor> = Vec::new();
    let mut looking_up: &[String] = &[];
    // Members of owned groups are known from their member values.
    let owned_members = OwnedMembers::new(owned);
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
async fn resolve(
    ad: &mut AdConn,
    cloud: &CloudSnapshot,
    owned: Vec<writeback_core::AdGroup>,
    (found, tried): Lookups,
) -> Result<AdSnapshot, CycleError> {
    let owned_members = OwnedMembers::new(&owned);
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
    Ok(AdSnapshot { schema: ad.schema, groups: owned, directory, protected, outside: BTreeMap::new() })
}

pub async fn connect(cfg: &Config) -> Result<(GraphClient, AdConn), CycleError> {
    let graph = GraphClient::new(cfg.graph()?)?;
    let ad = AdConn::connect(&cfg.ad()?).await?;
    Ok((graph, ad))
}

/// The state from the database, without writing to it (for `plan`).
pub fn state_read_only(cfg: &Config) -> Result<State, CycleError> {
    Ok(match Store::open_read_only(&cfg.state_path())? {
        Some(s) => s.state()?,
        None => State::default(),
    })
}

/// A plan of a full cycle against the current cloud and AD; writes nothing anywhere.
pub async fn plan(cfg: &Config, allow: Allow) -> Result<(Plan, Snapshot), CycleError> {
    let state = state_read_only(cfg)?;
    let (graph, mut ad) = connect(cfg).await?;
    let ous = cfg.managed_ous(&state);
    let snap = read(&graph, &mut ad, &ous, &cfg.rules, cfg.writeback.write_owners).await;
    progress::done();
    let mut snap = snap?;
    let checked = check_links(&mut ad, &mut snap, &state, cfg, &ous).await?;
    ad.close().await;
    let plan = writeback_core::plan(&snap.cloud, &snap.ad, &checked, &cfg.planner(allow));
    Ok((plan, snap))
}

/// What `sync` reports.
pub struct RunResult {
    pub run_id: i64,
    pub kind: RunKind,
    pub status: RunStatus,
    pub summary: Summary,
    pub errors: Vec<ObjectError>,
    pub duration_ms: i64,
    pub message: Option<String>,
    pub graph_requests: u64,
    pub graph_throttled: u64,
    /// LDAP requests the cycle sent (reads and writes).
    pub ldap_operations: u64,
    /// The explanation of every group this cycle planned.
    pub reports: Vec<GroupReport>,
}

/// What one cycle did, before it is recorded as a run.
struct Outcome {
    kind: RunKind,
    status: RunStatus,
    summary: Summary,
    errors: Vec<ObjectError>,
    message: Option<String>,
    reports: Vec<GroupReport>,
}

/// What every step of one cycle runs with.
struct Cx<'a> {
    cfg: &'a Config,
    allow: Allow,
    lock: &'a StateLock,
}

/// One sync cycle, recorded in the state database whatever happens. Delta when the state has
/// fresh watermarks and `full` is not asked for; full otherwise.
/// `lock` is the state lock this process holds: checked before anything is written.
pub async fn sync(cfg: &Config, allow: Allow, full: bool, lock: &StateLock) -> Result<RunResult, CycleError> {
    let started = Instant::now();
    let mut store = Store::open(&cfg.state_path())?;
    let marks = if full { None } else { store.watermarks()? };
    let mut note = None;
    let settings = cfg.settings_fingerprint();
    let fresh = marks.filter(|w| {
        if now_secs().saturating_sub(w.taken_at) >= DELTA_LIFETIME.as_secs() {
            note = Some(
                "the delta links were older than 7 days (Graph forgets them): a full sync ran instead".to_string(),
            );
            return false;
        }
        if w.settings != settings {
            note = Some("the configuration changed since the last cycle: a full sync ran instead".to_string());
            return false;
        }
        true
    });
    let run_id = store.start_run(if fresh.is_some() { RunKind::Delta } else { RunKind::Full })?;
    let cx = Cx { cfg, allow, lock };
    let result = async {
        let (graph, mut ad) = connect(cfg).await?;
        let outcome = match &fresh {
            Some(w) => match delta_cycle(&cx, &mut store, run_id, &graph, &mut ad, w).await? {
                Some(o) => o,
                None => {
                    note = Some(
                        "the delta links had expired (or AD answered from another DC): a full sync ran instead".into(),
                    );
                    full_cycle(&cx, &mut store, run_id, &graph, &mut ad).await?
                }
            },
            None => full_cycle(&cx, &mut store, run_id, &graph, &mut ad).await?,
        };
        let ldap_operations = ad.operations();
        ad.close().await;
        Ok::<_, CycleError>((outcome, graph.stats.requests(), graph.stats.throttled(), ldap_operations))
    }
    .await;
    progress::done();
    let duration_ms = started.elapsed().as_millis() as i64;
    match result {
        Ok((mut o, graph_requests, graph_throttled, ldap_operations)) => {
            if let Some(n) = note {
                tracing::warn!("{n}");
                o.message = Some(o.message.map(|m| format!("{n}; {m}")).unwrap_or(n));
            }
            store.finish_run(run_id, o.kind, o.status, &o.summary, duration_ms, o.message.as_deref())?;
            tracing::info!(
                kind = o.kind.as_str(),
                status = o.status.as_str(),
                duration_ms,
                graph_requests,
                ldap_operations,
                "cycle finished"
            );
            Ok(RunResult {
                run_id,
                kind: o.kind,
                status: o.status,
                summary: o.summary,
                errors: o.errors,
                duration_ms,
                message: o.message,
                graph_requests,
                graph_throttled,
                ldap_operations,
                reports: o.reports,
            })
        }
        Err(e) => {
            let kind = if fresh.is_some() { RunKind::Delta } else { RunKind::Full };
            store.finish_run(
                run_id,
                kind,
                RunStatus::Failed,
                &Summary::default(),
                duration_ms,
                Some(&e.to_string()),
            )?;
            Err(e)
        }
    }
}

async fn full_cycle(
    cx: &Cx<'_>,
    store: &mut Store,
    run_id: i64,
    graph: &GraphClient,
    ad: &mut AdConn,
) -> Result<Outcome, CycleError> {
    let cfg = cx.cfg;
    // Watermarks first: what changes while we read is seen again by the next delta cycle.
    let (usn, dc) = ad.highest_usn().await?;
    let groups_link = graph.latest_delta_link(Collection::Groups, cfg.writeback.write_owners).await?;
    let users_link = graph.latest_delta_link(Collection::Users, false).await?;
    let state = store.state()?;
    let ous = cfg.managed_ous(&state);
    let setup = EarlySetup { cfg, state, planner: cfg.planner(cx.allow), lock: cx.lock };
    let (snap, early) = read_with(graph, ad, &ous, &cfg.rules, cfg.writeback.write_owners, Some(setup)).await?;
    let marks = Watermarks {
        groups_link,
        users_link,
        taken_at: now_secs(),
        ad_usn: usn,
        dc,
        settings: cfg.settings_fingerprint(),
        recheck: Vec::new(),
        pending: Default::default(),
    };
    apply_and_record(cx, store, run_id, ad, snap, None, marks, RunKind::Full, early).await
}

/// `Ok(None)` when the delta links expired or the DC changed: the caller runs a full cycle.
async fn delta_cycle(
    cx: &Cx<'_>,
    store: &mut Store,
    run_id: i64,
    graph: &GraphClient,
    ad: &mut AdConn,
    w: &Watermarks,
) -> Result<Option<Outcome>, CycleError> {
    let cfg = cx.cfg;
    let (usn, dc) = ad.highest_usn().await?;
    if dc != w.dc {
        // USNs are per DC: changes cannot be followed across a failover.
        return Ok(None);
    }
    let groups = match graph.delta_round(&w.groups_link).await {
        Err(e) if is_expired(&e) => return Ok(None),
        other => other?,
    };
    let users = match graph.delta_round(&w.users_link).await {
        Err(e) if is_expired(&e) => return Ok(None),
        other => other?,
    };
    let state = store.state()?;
    let ous = cfg.managed_ous(&state);
    let our_usns = store.usns()?;

    // Dirty: named by the cloud's delta, changed in AD by someone else, with an open error, or
    // put off by an earlier cycle.
    let mut dirty: BTreeSet<String> = groups.named.clone();
    let changed = ad.owned_changed_since(&ous, w.ad_usn + 1).await?;
    let deleted = ad.deleted_groups_since(w.ad_usn + 1).await?;
    let links = state.links.iter().map(|(id, l)| (id, l.guid.as_str()));
    let drifted = by_others(&changed, &our_usns, &deleted, links);
    dirty.extend(drifted.iter().cloned());
    // Changed by someone else while the last cycle ran (its watermark is past them).
    dirty.extend(w.recheck.iter().cloned());
    dirty.extend(store.error_ids()?);
    dirty.extend(w.pending.keys().cloned());
    let changed_users: Vec<String> = users.named.iter().cloned().collect();
    if !changed_users.is_empty() {
        dirty.extend(graph.parents_of(Collection::Users, &changed_users).await?);
    }
    // Every group named is read, removals too: what the round said is confirmed, not trusted.
    let to_read: Vec<String> = dirty.iter().cloned().collect();
    let mut settled = confirm::settle(graph, &to_read, &groups, &w.pending).await;

    // A group entering or leaving scope changes the members of the groups that contain it.
    let flipped: Vec<String> = settled
        .found
        .iter()
        .filter(|g| decide_with(g, &cfg.rules).in_scope != state.links.contains_key(&g.id))
        .map(|g| g.id.clone())
        .chain(settled.soft.iter().chain(&settled.gone).filter(|id| state.links.contains_key(*id)).cloned())
        .collect();
    if !flipped.is_empty() {
        let parents: Vec<String> =
            graph.parents_of(Collection::Groups, &flipped).await?.into_iter().filter(|p| !dirty.contains(p)).collect();
        let more = confirm::settle(graph, &parents, &groups, &w.pending).await;
        settled.found.extend(more.found);
        settled.failed.extend(more.failed);
        settled.soft.extend(more.soft);
        settled.gone.extend(more.gone);
        settled.pending.extend(more.pending);
        dirty.extend(parents);
    }
    let mut cloud = CloudSnapshot { groups: std::mem::take(&mut settled.found), ..Default::default() };
    cloud.rejected = settled.failed.clone();
    cloud.soft_deleted = settled.soft.clone();
    let in_scope: Vec<String> =
        decisions(&cloud, &cfg.rules).into_iter().filter(|(_, d)| d.in_scope).map(|(id, _)| id).collect();
    cloud.members = graph.members_of(&in_scope).await;
    // A member read older than the round: planned next cycle, not from old data now.
    let stale = confirm::put_off_stale(&mut cloud.members, &groups, &w.pending, &mut settled);
    cloud.groups.retain(|g| !stale.contains(&g.id));
    if cfg.writeback.write_owners {
        let read: Vec<String> = in_scope.into_iter().filter(|id| !stale.contains(id)).collect();
        cloud.owners = graph.owners_of(&read).await;
    }
    tracing::info!(
        cloud_changes = groups.named.len(),
        member_changes = groups.member_changes,
        user_changes = changed_users.len(),
        ad_drift = drifted.len() + w.recheck.len(),
        dirty = dirty.len(),
        put_off = settled.pending.len(),
        "delta cycle"
    );
    // Only groups Graph described, or confirmed removed, are planned: nothing else can be an orphan.
    let considered: Vec<String> = cloud
        .groups
        .iter()
        .map(|g| g.id.clone())
        .chain(settled.soft.iter().cloned())
        .chain(settled.gone.iter().cloned())
        .collect();
    let owned = ad.read_owned_groups_by_ids(&ous, &considered).await?;
    let ad_snap = resolve(ad, &cloud, owned, Lookups::default()).await?;
    let snap = Snapshot { cloud, ad: ad_snap };
    let marks = Watermarks {
        groups_link: groups.delta_link,
        users_link: users.delta_link,
        taken_at: now_secs(),
        ad_usn: usn,
        dc,
        settings: cfg.settings_fingerprint(),
        recheck: Vec::new(),
        pending: settled.pending,
    };
    let looked_at: Vec<String> = dirty.into_iter().collect();
    apply_and_record(cx, store, run_id, ad, snap, Some(looked_at), marks, RunKind::Delta, None).await.map(Some)
}

/// What the planner may take from the state's links, checked against AD. A link the read did
/// not confirm (the planner uses it for a group in scope it did not find, or for a nested
/// group it does not plan) is read by objectGUID: an owned group in a managed OU keeps its link
/// (with where it is now); one outside them is reported, never recreated beside itself
/// (`ad.outside`) nor nested; an object that is not that group loses the link; a link to an
/// object that is gone stays (the planner says the group is created again). Returns the state
/// to plan with.
async fn check_links(
    ad: &mut AdConn,
    snap: &mut Snapshot,
    state: &State,
    cfg: &Config,
    ous: &[String],
) -> Result<State, CycleError> {
    let read: HashSet<&str> = snap.ad.groups.iter().map(|g| g.cloud_id.as_str()).collect();
    let in_scope: BTreeSet<String> =
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
        .map(|m| m.id.to_ascii_lowercase());
    let unseen: BTreeMap<String, String> = in_scope
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
    let unseen: Vec<(String, String)> = unseen.into_iter().collect();
    let (ours, not_ours) = ad.check_links(&unseen).await?;
    for id in not_ours {
        checked.links.remove(&id);
    }
    for (id, guid, dn) in ours {
        if ous.iter().any(|ou| writeback_core::naming::dn_is_within(&dn, ou)) {
            checked.links.insert(id, writeback_core::Link { guid, dn });
        } else {
            checked.links.remove(&id);
            if in_scope.contains(&id) {
                tracing::warn!(cloud_id = %id, %dn, "a group writeback wrote is outside the managed OUs: reported, not recreated");
                snap.ad.outside.insert(id, dn);
            }
        }
    }
    Ok(checked)
}

/// Plans the snapshot, applies it, records links, errors and watermarks.
#[allow(clippy::too_many_arguments)]
async fn apply_and_record(
    cx: &Cx<'_>,
    store: &mut Store,
    run_id: i64,
    ad: &mut AdConn,
    mut snap: Snapshot,
    looked_at: Option<Vec<String>>,
    mut marks: Watermarks,
    kind: RunKind,
    early: Option<Early>,
) -> Result<Outcome, CycleError> {
    let cfg = cx.cfg;
    let state = store.state()?;
    let ous = cfg.managed_ous(&state);
    let checked = check_links(ad, &mut snap, &state, cfg, &ous).await?;
    let plan = writeback_core::plan(&snap.cloud, &snap.ad, &checked, &cfg.planner(cx.allow));
    // The adds already written, and the connection that wrote them, carry on with the rest.
    let (plan, early) = match early {
        Some(e) => {
            let mut f = e.finish(plan).await.map_err(CycleError::Other)?;
            (std::mem::take(&mut f.plan), Some(f))
        }
        None => (plan, None),
    };
    let written = early.as_ref().map_or(0, |f| f.written);
    no_block_after_early_adds(written, plan.blocked.as_deref())?;
    if let Some(why) = &plan.blocked {
        let mut s = plan.summary.clone();
        s.errors = plan.errors.len();
        return Ok(Outcome {
            kind,
            status: RunStatus::StoppedDeleteThreshold,
            summary: s,
            errors: plan.errors.clone(),
            message: Some(why.clone()),
            reports: plan.groups.clone(),
        });
    }
    for n in &plan.notices {
        tracing::warn!("{n}");
    }
    cx.lock.check().map_err(CycleError::Lock)?;
    tracing::info!(operations = plan.operations.len(), already_written = written, "applying the plan");
    let mut progress = progress::counter("applying operations");
    let (report, early_errors) = match early {
        None => (ad.apply(&plan, &ous, &mut progress).await, Vec::new()),
        Some(Finished { mut conn, mut report, errors, .. }) => {
            conn.apply_ops(&plan.operations[written..], &ous, &mut report, &mut progress).await;
            conn.finish(&mut report).await;
            ad.add_operations(conn.operations());
            conn.close().await;
            (report, errors)
        }
    };
    progress::done();

    let mut errors = plan.errors.clone();
    errors.extend(early_errors);
    errors.extend(apply_errors(&report));
    if let Some(why) = &report.stopped {
        // Record what happened, but keep the watermarks: the next cycle repeats this work.
        let mut summary = applied_summary(&plan, &report);
        summary.errors = errors.len();
        match &looked_at {
            None => store.replace_errors(run_id, &errors)?,
            Some(ids) => store.merge_errors(run_id, ids, &errors)?,
        }
        return Ok(Outcome {
            kind,
            status: RunStatus::Quarantined,
            summary,
            errors,
            message: Some(why.clone()),
            reports: plan.groups,
        });
    }
    let mut summary = applied_summary(&plan, &report);
    summary.errors = errors.len();

    // Links: every owned group we saw, updated by what this run created, renamed or deleted.
    let mut links: BTreeMap<String, (String, String)> =
        snap.ad.groups.iter().map(|g| (g.cloud_id.clone(), (g.guid.clone(), g.dn.clone()))).collect();
    links.extend(report.links.clone());
    let deleted: Vec<String> = plan
        .operations
        .iter()
        .zip(&report.outcomes)
        .filter(|(op, out)| matches!(op, Operation::Delete { .. }) && out.error.is_none())
        .map(|(op, _)| op.cloud_id().to_string())
        .collect();
    for id in &deleted {
        links.remove(id);
    }
    store.save_links(links.iter().map(|(id, (g, dn))| (id.as_str(), g.as_str(), dn.as_str())), &deleted)?;
    // A full cycle saw every owned group: an earlier OU left empty is no longer managed.
    let dns = looked_at.is_none().then(|| links.values().map(|(_, dn)| dn.as_str()).collect());
    store.save_managed_ous(&cfg.ous_to_keep(&state, dns))?;
    if report.ldap_writes > 0 {
        past_own_writes(ad, store, &ous, &report, &links, &mut marks).await?;
    }
    match &looked_at {
        None => store.replace_errors(run_id, &errors)?,
        Some(ids) => store.merge_errors(run_id, ids, &errors)?,
    }
    store.save_watermarks(&marks)?;
    tracing::info!(ldap_writes = report.ldap_writes, "cycle done");
    if !plan.held.is_empty() {
        // Applied but for the held removals: a threshold stopped part of the run (exit 3).
        let message = format!(
            "the member removals of {} groups were held back by [writeback] member_removal_percent; everything else was applied. {}",
            plan.held.len(),
            plan.held.join(" | ")
        );
        tracing::warn!("{message}");
        return Ok(Outcome {
            kind,
            status: RunStatus::StoppedDeleteThreshold,
            summary,
            errors,
            message: Some(message),
            reports: plan.groups,
        });
    }
    let status = if errors.is_empty() { RunStatus::Success } else { RunStatus::CompletedWithErrors };
    Ok(Outcome { kind, status, summary, errors, message: None, reports: plan.groups })
}

/// Early adds run only where nothing is owned yet and no create threshold can stop the run,
/// so no threshold can block a plan after them: if one does, that is a bug, and nothing more is
/// written (release builds check it too; a `debug_assert!` would vanish there).
fn no_block_after_early_adds(written: usize, blocked: Option<&str>) -> Result<(), CycleError> {
    match blocked {
        Some(why) if written > 0 => Err(CycleError::Invariant(format!(
            "{written} groups were added before the whole tenant was read, and the whole plan is now stopped ({why}); nothing more is written. This should not happen: please report it. The next cycle finds those groups by their marker"
        ))),
        _ => Ok(()),
    }
}

/// Records the `uSNChanged` our writes left (so the next delta cycle does not take them for
/// drift) and moves the AD watermark past them: what anyone else changed or deleted while
/// this cycle ran is named in `marks.recheck` instead. Without it, the delta cycle after a
/// full sync of 10,000 groups listed all 10,000 again (2.97 s for one change).
async fn past_own_writes(
    ad: &mut AdConn,
    store: &mut Store,
    ous: &[String],
    report: &ApplyReport,
    links: &BTreeMap<String, (String, String)>,
    marks: &mut Watermarks,
) -> Result<(), CycleError> {
    // Read first: whatever changes after this USN is the next delta cycle's anyway.
    let (end_usn, end_dc) = ad.highest_usn().await?;
    let written: BTreeSet<&str> = report.outcomes.iter().map(|o| o.cloud_id.as_str()).collect();
    let changed = ad.owned_changed_since(ous, marks.ad_usn + 1).await?;
    let ours: Vec<(String, u64)> = changed.iter().filter(|(id, _)| written.contains(id.as_str())).cloned().collect();
    store.save_usns(&ours)?;
    if end_dc != marks.dc {
        // USNs are per DC: keep the start watermark (the next cycle runs full).
        return Ok(());
    }
    let deleted = ad.deleted_groups_since(marks.ad_usn + 1).await?;
    let links = links.iter().map(|(id, (guid, _))| (id, guid.as_str()));
    marks.recheck = by_others(&changed, &store.usns()?, &deleted, links).into_iter().collect();
    marks.ad_usn = end_usn;
    Ok(())
}

/// Owned groups someone else changed or deleted in AD: changed ones whose `uSNChanged` is not
/// the one our last write left, and deleted ones whose tombstone's objectGUID we link to.
fn by_others<'a>(
    changed: &[(String, u64)],
    ours: &HashMap<String, u64>,
    deleted: &[String],
    links: impl Iterator<Item = (&'a String, &'a str)>,
) -> BTreeSet<String> {
    let deleted: HashSet<&str> = deleted.iter().map(String::as_str).collect();
    let mut out: BTreeSet<String> =
        changed.iter().filter(|(id, u)| ours.get(id) != Some(u)).map(|(id, _)| id.clone()).collect();
    out.extend(links.filter(|(_, guid)| deleted.contains(guid)).map(|(id, _)| id.clone()));
    out
}

fn apply_errors(report: &ApplyReport) -> Vec<ObjectError> {
    let mut out = Vec::new();
    for o in &report.outcomes {
        if let Some(e) = &o.error {
            out.push(ObjectError {
                cloud_id: o.cloud_id.clone(),
                member_id: None,
                message: format!("{} failed: {e}", o.op),
            });
        }
        for (member, e) in &o.member_errors {
            out.push(ObjectError { cloud_id: o.cloud_id.clone(), member_id: Some(member.clone()), message: e.clone() });
        }
    }
    out
}

/// Counts of what was actually written: failed operations and failed member values are left out.
fn applied_summary(plan: &Plan, report: &ApplyReport) -> Summary {
    let ok_ops: Vec<Operation> = plan
        .operations
        .iter()
        .zip(&report.outcomes)
        .filter(|(_, o)| o.error.is_none())
        .map(|(op, _)| op.clone())
        .collect();
    let mut applied = Plan { operations: ok_ops, groups: plan.groups.clone(), ..Default::default() };
    applied.summarize();
    let mut s = applied.summary;
    for (op, o) in plan.operations.iter().zip(&report.outcomes) {
        let failed = o.member_errors.len();
        match op {
            Operation::RemoveMembers { .. } => s.member_removes = s.member_removes.saturating_sub(failed),
            _ => s.member_adds = s.member_adds.saturating_sub(failed),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_blocked_after_early_adds_is_an_error_in_every_build() {
        assert!(no_block_after_early_adds(0, Some("too many deletes")).is_ok());
        assert!(no_block_after_early_adds(12, None).is_ok());
        let e = no_block_after_early_adds(12, Some("too many deletes")).expect_err("a bug");
        assert!(matches!(e, CycleError::Invariant(_)) && e.to_string().contains("12 groups"));
    }
}
