//! One `sync` cycle, top to bottom: choose full or delta, read, plan, apply, record.
//!
//! A full cycle reads everything. A delta cycle asks Graph's delta queries and AD's
//! `uSNChanged` what changed since the last cycle, reads those groups completely, and plans
//! them with the same planner. Watermarks (delta links, USN) are stored only after the
//! cycle's changes are applied or recorded, so a failed cycle is simply repeated.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::Instrument;

use writeback_ad::{AdChanges, AdConn, ApplyReport, OpOutcome};
use writeback_core::plan::Operation;
use writeback_core::planner::decisions;
use writeback_core::scope::decide_with;
use writeback_core::{
    Allow, CloudId, CloudSnapshot, Dn, GroupReport, ObjectError, ObjectGuid, Plan, RunKind, RunStatus, Stopped, Summary,
};
use writeback_graph::{is_expired, Collection, DeltaRound, GraphClient};
use writeback_store::{approved, Approval, Pending, Store, Watermarks};

use crate::audit::{self, Hints};
use crate::config::Config;
use crate::confirm;
use crate::early::{Early, Finished};
use crate::engine::{check_links, connect, read_with, resolve, EarlySetup, Snapshot};
use crate::error::CycleError;
use crate::lead::Lead;
use crate::progress;

/// Graph forgets delta tokens for directory objects after 7 days.
const DELTA_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
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
    /// What a threshold stopped or held back, with the commands that approve it.
    pub stopped: Stopped,
}

/// What one cycle did, before it is recorded as a run.
struct Outcome {
    kind: RunKind,
    status: RunStatus,
    summary: Summary,
    errors: Vec<ObjectError>,
    message: Option<String>,
    reports: Vec<GroupReport>,
    stopped: Stopped,
}

/// How much of the tenant a cycle looked at: everything, or the groups a delta named.
enum Reach {
    Full,
    Delta {
        looked_at: Vec<CloudId>,
        hints: Hints,
    },
    /// `sync --group`: the groups named (and the groups that contain one that entered or left
    /// scope). It moves no watermark and leaves the tenant's stops alone: the next delta cycle
    /// still sees everything that changed.
    Groups {
        looked_at: Vec<CloudId>,
    },
}

impl Reach {
    fn kind(&self) -> RunKind {
        match self {
            Reach::Full => RunKind::Full,
            Reach::Delta { .. } => RunKind::Delta,
            Reach::Groups { .. } => RunKind::Group,
        }
    }

    /// Only a cycle that looked at everything the cloud and AD said since the last one moves
    /// the watermarks and says what is stopped.
    fn whole_tenant(&self) -> bool {
        !matches!(self, Reach::Groups { .. })
    }

    /// A full cycle's errors replace the recorded ones; a delta cycle's replace those of the
    /// groups it looked at.
    async fn save_errors(&self, store: &mut Store, run_id: i64, errors: &[ObjectError]) -> Result<(), CycleError> {
        match self {
            Reach::Full => store.replace_errors(run_id, errors).await?,
            Reach::Delta { looked_at, .. } | Reach::Groups { looked_at } => {
                store.merge_errors(run_id, looked_at, errors).await?
            }
        }
        Ok(())
    }
}

/// One cycle's settings, connections and state, from the first read to the last record.
struct Cycle<'a> {
    cfg: &'a Config,
    /// What this run may go past: the caller's, with the open approvals merged in.
    allow: Allow,
    /// The approvals this cycle uses once it plans (see `writeback approve`).
    approvals: Vec<Approval>,
    /// The lead this process holds: checked before anything is written.
    lead: &'a Lead,
    store: &'a mut Store,
    run_id: i64,
    graph: GraphClient,
    ad: AdConn,
}

/// One sync cycle, recorded in the state database whatever happens. Delta when the state has
/// fresh watermarks and `full` is not asked for; full otherwise.
pub async fn sync(cfg: &Config, allow: Allow, full: bool, lead: &Lead) -> Result<RunResult, CycleError> {
    run(cfg, allow, if full { Mode::Full } else { Mode::Auto }, lead).await
}

/// A cycle of only these groups (`sync --group`, `POST /sync` with groups): read, planned and
/// applied as a delta cycle plans its dirty groups, under the same lead, thresholds and guard,
/// recorded as kind `group`. It uses no approval (those are for the tenant's next cycle).
pub async fn sync_groups(cfg: &Config, allow: Allow, ids: &[CloudId], lead: &Lead) -> Result<RunResult, CycleError> {
    run(cfg, allow, Mode::Groups(ids.to_vec()), lead).await
}

/// What a cycle covers.
enum Mode {
    /// Delta when the watermarks allow it.
    Auto,
    Full,
    Groups(Vec<CloudId>),
}

async fn run(cfg: &Config, allow: Allow, mode: Mode, lead: &Lead) -> Result<RunResult, CycleError> {
    let started = Instant::now();
    let mut store = Store::open(&cfg.state()?).await?;
    store.fenced(lead.fence(), &crate::lead::host());
    store.close_interrupted().await?;
    let marks = if matches!(mode, Mode::Auto) { store.watermarks().await? } else { None };
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
    let kind = match (&mode, &fresh) {
        (Mode::Groups(_), _) => RunKind::Group,
        (_, Some(_)) => RunKind::Delta,
        (_, None) => RunKind::Full,
    };
    let run_id = store.start_run(kind).await?;
    let approvals = if kind == RunKind::Group { Vec::new() } else { store.open_approvals().await? };
    let allow = Allow { approved: approved(&approvals), ..allow };
    let result = async {
        let (graph, mut ad) = connect(cfg).await?;
        ad.set_gate(lead.gate());
        let mut cycle = Cycle { cfg, allow, approvals, lead, store: &mut store, run_id, graph, ad };
        let outcome = match (&mode, &fresh) {
            (Mode::Groups(ids), _) => cycle.groups(ids).await?,
            (_, Some(w)) => match cycle.delta(w).await? {
                Some(o) => o,
                None => {
                    note = Some(
                        "the delta links had expired (or AD answered from another DC): a full sync ran instead".into(),
                    );
                    cycle.full().await?
                }
            },
            (_, None) => cycle.full().await?,
        };
        let ldap_operations = cycle.ad.operations();
        cycle.ad.close().await;
        Ok::<_, CycleError>((outcome, cycle.graph.stats.requests(), cycle.graph.stats.throttled(), ldap_operations))
    }
    // Every line the cycle logs carries its run id (a field of the span in JSON logs).
    .instrument(tracing::info_span!("cycle", run_id))
    .await;
    progress::done();
    let duration_ms = started.elapsed().as_millis() as i64;
    let (mut o, graph_requests, graph_throttled, ldap_operations) = match result {
        Ok(done) => done,
        Err(e) => {
            let message = e.to_string();
            // A lost lead records nothing (its state writes would fail, or wait for a database
            // that is gone): the next leader marks the run interrupted.
            if !lead.lost() {
                let none = Summary::default();
                store.finish_run(run_id, kind, RunStatus::Failed, &none, duration_ms, Some(&message)).await?;
            }
            return Err(e);
        }
    };
    if let Some(n) = note {
        tracing::warn!("{n}");
        o.message = Some(o.message.map(|m| format!("{n}; {m}")).unwrap_or(n));
    }
    store.finish_run(run_id, o.kind, o.status, &o.summary, duration_ms, o.message.as_deref()).await?;
    let s = &o.summary;
    tracing::info!(
        run_id,
        kind = o.kind.as_str(),
        status = o.status.as_str(),
        duration_ms,
        graph_requests,
        graph_throttled,
        ldap_operations,
        adds = s.adds,
        updates = s.updates,
        renames = s.renames,
        moves = s.moves,
        deletes = s.deletes,
        member_adds = s.member_adds,
        member_removes = s.member_removes,
        skipped_members = s.skipped_members,
        errors = s.errors,
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
        stopped: o.stopped,
    })
}

impl Cycle<'_> {
    async fn full(&mut self) -> Result<Outcome, CycleError> {
        let cfg = self.cfg;
        // Watermarks first: what changes while we read is seen again by the next delta cycle.
        let (usn, dc) = self.ad.highest_usn().await?;
        let groups_link = self.graph.latest_delta_link(Collection::Groups, cfg.writeback.write_owners).await?;
        let users_link = self.graph.latest_delta_link(Collection::Users, false).await?;
        let state = self.store.state().await?;
        let ous = cfg.managed_ous(&state);
        let setup = EarlySetup { cfg, state, planner: cfg.planner(self.allow.clone()), lead: self.lead };
        let (snap, early) = read_with(&self.graph, &mut self.ad, &ous, cfg, Some(setup)).await?;
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
        self.apply_and_record(snap, Reach::Full, marks, early).await
    }

    /// `Ok(None)` when the delta links expired or the DC changed: the caller runs a full cycle.
    async fn delta(&mut self, w: &Watermarks) -> Result<Option<Outcome>, CycleError> {
        let (cfg, graph) = (self.cfg, &self.graph);
        let (usn, dc) = self.ad.highest_usn().await?;
        if dc != w.dc {
            // USNs are per DC: changes cannot be followed across a failover.
            return Ok(None);
        }
        let mut groups = match graph.delta_round(&w.groups_link).await {
            Err(e) if is_expired(&e) => return Ok(None),
            other => other?,
        };
        let users = match graph.delta_round(&w.users_link).await {
            Err(e) if is_expired(&e) => return Ok(None),
            other => other?,
        };
        let state = self.store.state().await?;
        let ous = cfg.managed_ous(&state);

        // Dirty: named by the cloud's delta, changed in AD by someone else, with an open error,
        // or put off by an earlier cycle.
        let mut dirty: BTreeSet<CloudId> = groups.named.clone();
        let changes = self.ad.changes_since(&ous, w.ad_usn + 1).await?;
        let links = state.links.iter().map(|(id, l)| (id, &l.guid));
        let drifted = changes.by_others(&self.store.usns().await?, links);
        dirty.extend(drifted.iter().cloned());
        // Changed by someone else while the last cycle ran (its watermark is past them).
        dirty.extend(w.recheck.iter().cloned());
        dirty.extend(self.store.error_ids().await?);
        dirty.extend(w.pending.keys().cloned());
        let changed_users: Vec<CloudId> = users.named.iter().cloned().collect();
        if !changed_users.is_empty() {
            dirty.extend(graph.parents_of(Collection::Users, &changed_users).await?);
        }
        let changed_users = changed_users.len();
        let (snap, settled, dirty) = self.read_dirty(dirty, &groups, &w.pending, true).await?;
        tracing::info!(
            cloud_changes = groups.named.len(),
            member_changes = groups.member_changes,
            user_changes = changed_users,
            ad_drift = drifted.len() + w.recheck.len(),
            dirty = dirty.len(),
            put_off = settled.pending.len(),
            "delta cycle"
        );
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
        let hints = std::mem::take(&mut groups.member_hints);
        let reach = Reach::Delta { looked_at: dirty.into_iter().collect(), hints };
        self.apply_and_record(snap, reach, marks, None).await.map(Some)
    }

    /// Reads the dirty groups completely and plans-ready: each settled (found, removed, put
    /// off), the groups containing one that entered or left scope added, members read (a read
    /// older than the round put off), the owned groups among them and the members looked up in
    /// AD. Returns the snapshot, how the groups settled, and every group looked at.
    async fn read_dirty(
        &mut self,
        mut dirty: BTreeSet<CloudId>,
        groups: &DeltaRound,
        pending: &BTreeMap<CloudId, Pending>,
        removals: bool,
    ) -> Result<(Snapshot, confirm::Settled, BTreeSet<CloudId>), CycleError> {
        let (cfg, graph) = (self.cfg, &self.graph);
        let state = self.store.state().await?;
        let ous = cfg.managed_ous(&state);
        // Every group named is read, removals too: what the round said is confirmed, not trusted.
        let to_read: Vec<CloudId> = dirty.iter().cloned().collect();
        let mut settled = confirm::settle(graph, &to_read, groups, pending).await;

        // A group entering or leaving scope changes the members of the groups that contain it.
        let flipped: Vec<CloudId> = settled
            .found
            .iter()
            .filter(|g| decide_with(g, &cfg.rules).in_scope != state.links.contains_key(&g.id))
            .map(|g| g.id.clone())
            .chain(settled.soft.iter().chain(&settled.gone).filter(|id| state.links.contains_key(*id)).cloned())
            .collect();
        if !flipped.is_empty() {
            let parents: Vec<CloudId> = graph
                .parents_of(Collection::Groups, &flipped)
                .await?
                .into_iter()
                .filter(|p| !dirty.contains(p))
                .collect();
            let more = confirm::settle(graph, &parents, groups, pending).await;
            settled.found.extend(more.found);
            settled.failed.extend(more.failed);
            settled.soft.extend(more.soft);
            settled.gone.extend(more.gone);
            settled.pending.extend(more.pending);
            dirty.extend(parents);
        }
        if cfg.writeback.nested == writeback_core::Nested::Flatten {
            self.flattening_ancestors(&mut dirty, &mut settled, groups, pending).await?;
        }
        let graph = &self.graph;
        let mut cloud = CloudSnapshot { groups: std::mem::take(&mut settled.found), ..Default::default() };
        cloud.rejected = settled.failed.clone();
        cloud.soft_deleted = settled.soft.clone();
        let in_scope: Vec<CloudId> =
            decisions(&cloud, &cfg.rules).into_iter().filter(|(_, d)| d.in_scope).map(|(id, _)| id).collect();
        cloud.members = graph.members_of(&in_scope).await;
        crate::engine::complete_nested(graph, &mut cloud, cfg).await;
        crate::engine::flatten_reads(graph, &mut cloud, cfg).await;
        // A member read older than the round: planned next cycle, not from old data now.
        let stale = confirm::put_off_stale(&mut cloud.members, groups, pending, &mut settled);
        cloud.groups.retain(|g| !stale.contains(&g.id));
        if cfg.writeback.write_owners {
            let read: Vec<CloudId> = in_scope.into_iter().filter(|id| !stale.contains(id)).collect();
            cloud.owners = graph.owners_of(&read).await;
        }
        // Only groups Graph described, or confirmed removed, are planned: nothing else can be
        // an orphan.
        // (A group cycle plans no removal of a group: the delta cycles confirm those.)
        let removed = settled.soft.iter().chain(settled.gone.iter()).filter(|_| removals).cloned();
        let considered: Vec<CloudId> = cloud.groups.iter().map(|g| g.id.clone()).chain(removed).collect();
        let owned = self.ad.read_owned_groups_by_ids(&ous, &considered).await?;
        let ad_snap = resolve(&mut self.ad, &cloud, owned, cfg.writeback.write_devices, Default::default()).await?;
        Ok((Snapshot { cloud, ad: ad_snap }, settled, dirty))
    }

    /// With `nested = "flatten"`, a change to a nested group that is not written back changes
    /// the groups it is flattened into: its ancestors (level by level, at most 16) are dirty too.
    async fn flattening_ancestors(
        &mut self,
        dirty: &mut BTreeSet<CloudId>,
        settled: &mut confirm::Settled,
        round: &DeltaRound,
        pending: &BTreeMap<CloudId, Pending>,
    ) -> Result<(), CycleError> {
        let rules = &self.cfg.rules;
        let mut frontier: Vec<CloudId> =
            settled.found.iter().filter(|g| !decide_with(g, rules).in_scope).map(|g| g.id.clone()).collect();
        for _ in 0..16 {
            if frontier.is_empty() {
                break;
            }
            let parents: Vec<CloudId> = self
                .graph
                .parents_of(Collection::Groups, &frontier)
                .await?
                .into_iter()
                .filter(|p| !dirty.contains(p))
                .collect();
            let more = confirm::settle(&self.graph, &parents, round, pending).await;
            frontier = more.found.iter().filter(|g| !decide_with(g, rules).in_scope).map(|g| g.id.clone()).collect();
            dirty.extend(parents);
            settled.found.extend(more.found);
            settled.failed.extend(more.failed);
            settled.soft.extend(more.soft);
            settled.gone.extend(more.gone);
            settled.pending.extend(more.pending);
        }
        Ok(())
    }

    /// `sync --group`: the groups named, as a delta cycle reads its dirty ones. The AD
    /// watermark is read only to tell this cycle's own writes from others' (it is not saved).
    async fn groups(&mut self, ids: &[CloudId]) -> Result<Outcome, CycleError> {
        // The tenant's cycles stopped at a threshold: a group cycle does not go around the stop
        // (only an administrator's --allow-* for this run does).
        let stop = self.store.stopped().await?.blocked;
        let allowed = |b: &writeback_core::plan::Blocked| match b.threshold.sync_option() {
            "--allow-creates" => self.allow.creates,
            _ => self.allow.deletes,
        };
        if let Some(b) = stop.filter(|b| !allowed(b)) {
            let message = format!(
                "the tenant's cycles are stopped by a threshold ({}): a group cycle does not go around it; \
                 approve or resolve the stop first ({}), or run sync --group with {}",
                b.message,
                b.approve_command(),
                b.threshold.sync_option()
            );
            return Ok(Outcome {
                kind: RunKind::Group,
                status: RunStatus::StoppedDeleteThreshold,
                summary: Summary::default(),
                errors: Vec::new(),
                message: Some(message),
                reports: Vec::new(),
                stopped: Stopped::default(),
            });
        }
        let (usn, dc) = self.ad.highest_usn().await?;
        let (round, before) = (DeltaRound::default(), BTreeMap::new());
        let (snap, settled, dirty) = self.read_dirty(ids.iter().cloned().collect(), &round, &before, false).await?;
        // Not found (a group this new may not be readable yet), or removed: nothing is decided
        // for it here (removals are the delta cycles' to confirm), and no error is kept for it.
        let left: Vec<String> =
            settled.pending.keys().chain(&settled.soft).chain(&settled.gone).map(|id| id.to_string()).collect();
        let dirty: BTreeSet<CloudId> = dirty.into_iter().filter(|id| !left.contains(&id.to_string())).collect();
        tracing::info!(groups = ids.len(), looked_at = dirty.len(), not_found = left.len(), "group cycle");
        let marks = Watermarks {
            groups_link: String::new(),
            users_link: String::new(),
            taken_at: now_secs(),
            ad_usn: usn,
            dc,
            settings: String::new(),
            recheck: Vec::new(),
            pending: BTreeMap::new(),
        };
        let reach = Reach::Groups { looked_at: dirty.into_iter().collect() };
        let mut outcome = self.apply_and_record(snap, reach, marks, None).await?;
        if !left.is_empty() {
            let note = format!(
                "Graph does not find {} (or it is deleted): nothing was done for it; a new group can take a minute \
                 to be readable, a removed one is handled by the next cycle",
                left.join(", ")
            );
            outcome.message = Some(with_note(note, outcome.message.take()));
        }
        Ok(outcome)
    }

    /// Plans the snapshot, applies it, records links, errors and watermarks.
    async fn apply_and_record(
        &mut self,
        mut snap: Snapshot,
        reach: Reach,
        mut marks: Watermarks,
        early: Option<Early>,
    ) -> Result<Outcome, CycleError> {
        let (cfg, kind, run_id) = (self.cfg, reach.kind(), self.run_id);
        let state = self.store.state().await?;
        let ous = cfg.managed_ous(&state);
        let checked = check_links(&mut self.ad, &mut snap, &state, cfg, &ous).await?;
        crate::converted::read(&self.graph, &mut self.ad, &mut snap, cfg).await?;
        let plan = writeback_core::plan(&snap.cloud, &snap.ad, &checked, &cfg.planner(self.allow.clone()));
        let used = self.use_approvals().await?;
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
        if let Some(blocked) = &plan.blocked {
            let mut summary = plan.summary.clone();
            summary.errors = plan.errors.len();
            let (errors, reports) = (plan.errors.clone(), plan.groups.clone());
            let stopped = Stopped { blocked: Some(blocked.clone()), held: Vec::new(), guarded: plan.guarded.clone() };
            if reach.whole_tenant() {
                self.store.save_stopped(&stopped).await?;
            }
            let status = RunStatus::StoppedDeleteThreshold;
            let mut message = with_note(blocked.message.clone(), used);
            if !reach.whole_tenant() {
                message.push_str(" (a group cycle uses no approval: run it again with the option the message names)");
            }
            let message = Some(message);
            return Ok(Outcome { kind, status, summary, errors, message, reports, stopped });
        }
        for n in &plan.notices {
            tracing::warn!("{n}");
        }
        self.lead.check().await.map_err(CycleError::Lock)?;
        tracing::info!(operations = plan.operations.len(), already_written = written, "applying the plan");
        let mut progress = progress::counter("applying operations");
        let (report, early_errors) = match early {
            None => (self.ad.apply(&plan, &ous, &mut progress).await, Vec::new()),
            Some(Finished { mut conn, mut report, errors, .. }) => {
                conn.apply_ops(&plan.operations[written..], &ous, &mut report, &mut progress).await;
                conn.finish(&mut report).await;
                self.ad.add_operations(conn.operations());
                conn.close().await;
                (report, errors)
            }
        };
        progress::done();

        let applied = report.paired(&plan.operations).map_err(CycleError::Invariant)?;
        if report.stopped.is_some() {
            // The lead was lost: nothing more is recorded (another instance leads, or will; it
            // finds in AD, by the markers, what this one wrote).
            self.lead.check().await.map_err(CycleError::Lock)?;
        }
        // Every change made is recorded, also when the breaker stopped the run.
        let hints = match &reach {
            Reach::Delta { hints, .. } => Some(hints),
            Reach::Full | Reach::Groups { .. } => None,
        };
        let unnamed = hints.map(|h| audit::unnamed_removals(&plan, &applied, h)).unwrap_or_default();
        let users = if unnamed.is_empty() { Vec::new() } else { self.graph.users_by_id(&unnamed).await };
        let more = audit::name_users(&users, &snap.ad.groups);
        let trail = audit::entries(run_id, &plan, &applied, hints, &more);
        self.store.record_audit(&trail).await?;
        if let Err(e) = self.store.prune_audit(cfg.state.audit_days).await {
            tracing::warn!(error = %e, "the audit trail could not be pruned");
        }
        // Takeover holds are remembered on their own (a later cycle may not plan the group): kept
        // where a removal failed, or where the breaker stopped before it.
        let unsettled: BTreeSet<CloudId> = applied
            .iter()
            .filter(|(op, out)| matches!(op, Operation::RemoveMembers { .. }) && out.error.is_some())
            .map(|(op, _)| op.cloud_id().clone())
            .chain(plan.operations[applied.len()..].iter().map(|op| op.cloud_id().clone()))
            .collect();
        self.store.save_takeover_holds(&plan.takeover_holds(&state.takeover_holds, &unsettled)).await?;
        let mut errors = plan.errors.clone();
        errors.extend(early_errors);
        errors.extend(apply_errors(&applied));
        let mut summary = applied_summary(&plan, &applied);
        summary.errors = errors.len();
        if let Some(why) = &report.stopped {
            // Record what happened, but keep the watermarks: the next cycle repeats this work.
            reach.save_errors(self.store, run_id, &errors).await?;
            let (status, message) = (RunStatus::Quarantined, Some(with_note(why.clone(), used)));
            let stopped = Stopped::default();
            return Ok(Outcome { kind, status, summary, errors, message, reports: plan.groups, stopped });
        }

        // Links: every owned group we saw, updated by what this run created, renamed or deleted.
        let mut links: BTreeMap<CloudId, (ObjectGuid, Dn)> =
            snap.ad.groups.iter().map(|g| (g.cloud_id.clone(), (g.guid.clone(), g.dn.clone()))).collect();
        links.extend(report.links.clone());
        let deleted: Vec<CloudId> = applied
            .iter()
            // Deleted, or released (given back to AD): no longer linked.
            .filter(|(op, out)| {
                matches!(op, Operation::Delete { .. } | Operation::Release { .. }) && out.error.is_none()
            })
            .map(|(op, _)| op.cloud_id().clone())
            .collect();
        for id in &deleted {
            links.remove(id);
        }
        let saved = links.iter().map(|(id, (g, dn))| (id.as_str(), g.as_str(), dn.as_str()));
        self.store.save_links(saved, &deleted).await?;
        // A full cycle saw every owned group: an earlier OU left empty is no longer managed.
        let dns = matches!(reach, Reach::Full).then(|| links.values().map(|(_, dn)| dn.as_str()).collect());
        self.store.save_managed_ous(&cfg.ous_to_keep(&state, dns)).await?;
        if report.ldap_writes > 0 {
            self.past_own_writes(&ous, &report, &links, &mut marks).await?;
        }
        reach.save_errors(self.store, run_id, &errors).await?;
        let stopped = Stopped { blocked: None, held: plan.held.clone(), guarded: plan.guarded.clone() };
        if reach.whole_tenant() {
            self.store.save_watermarks(&marks).await?;
            self.store.save_stopped(&stopped).await?;
        }
        tracing::info!(ldap_writes = report.ldap_writes, "cycle done");
        if !plan.held.is_empty() {
            // Applied but for the held removals: a threshold stopped part of the run (exit 3).
            let held: Vec<&str> = plan.held.iter().map(|h| h.message.as_str()).collect();
            let mut message = format!(
                "the member removals of {} groups were held back by [writeback] member_removal_percent; \
                 everything else was applied. {}",
                plan.held.len(),
                held.join(" | ")
            );
            if !reach.whole_tenant() {
                message.push_str(" (a group cycle uses no approval: run it again with --allow-deletes to go past)");
            }
            let (status, message) = (RunStatus::StoppedDeleteThreshold, Some(with_note(message, used)));
            return Ok(Outcome { kind, status, summary, errors, message, reports: plan.groups, stopped });
        }
        let status = if errors.is_empty() { RunStatus::Success } else { RunStatus::CompletedWithErrors };
        let message = used.map(|u| with_note(String::new(), Some(u)));
        Ok(Outcome { kind, status, summary, errors, message, reports: plan.groups, stopped })
    }

    /// Marks the open approvals used by this run, once it has planned with them: each is for
    /// one cycle. Returns what to say in the run's message.
    async fn use_approvals(&mut self) -> Result<Option<String>, CycleError> {
        if self.approvals.is_empty() {
            return Ok(None);
        }
        let ids: Vec<i64> = self.approvals.iter().map(|a| a.id).collect();
        self.store.use_approvals(&ids, self.run_id).await?;
        let said: Vec<String> = self
            .approvals
            .iter()
            .map(|a| format!("approval #{} by {} at {} ({})", a.id, a.who, a.created_at, a.approve.describe()))
            .collect();
        for line in &said {
            tracing::warn!(run_id = self.run_id, "this cycle uses {line}");
        }
        Ok(Some(format!("used {}", said.join("; "))))
    }

    /// Records the `uSNChanged` our writes left (so the next delta cycle does not take them for
    /// drift) and moves the AD watermark past them: what anyone else changed or deleted while
    /// this cycle ran is named in `marks.recheck` instead. Without it, the delta cycle after a
    /// full sync of 10,000 groups listed all 10,000 again (2.97 s for one change).
    async fn past_own_writes(
        &mut self,
        ous: &[String],
        report: &ApplyReport,
        links: &BTreeMap<CloudId, (ObjectGuid, Dn)>,
        marks: &mut Watermarks,
    ) -> Result<(), CycleError> {
        // Read first: whatever changes after this USN is the next delta cycle's anyway.
        let (end_usn, end_dc) = self.ad.highest_usn().await?;
        let written: BTreeSet<&CloudId> = report.outcomes.iter().map(|o| &o.cloud_id).collect();
        let changed = self.ad.owned_changed_since(ous, marks.ad_usn + 1).await?;
        let mut changes = AdChanges { changed, deleted: Vec::new() };
        self.store.save_usns(&changes.ours(&written)).await?;
        if end_dc != marks.dc {
            // USNs are per DC: keep the start watermark (the next cycle runs full).
            return Ok(());
        }
        changes.deleted = self.ad.deleted_groups_since(marks.ad_usn + 1).await?;
        let links = links.iter().map(|(id, (guid, _))| (id, guid));
        marks.recheck = changes.by_others(&self.store.usns().await?, links).into_iter().collect();
        marks.ad_usn = end_usn;
        Ok(())
    }
}

/// `message`, and what the run used (`note`), in one line.
fn with_note(message: String, note: Option<String>) -> String {
    match note {
        Some(n) if message.is_empty() => n,
        Some(n) => format!("{message} ({n})"),
        None => message,
    }
}

/// Early adds run only where nothing is owned yet and no create threshold can stop the run,
/// so no threshold can block a plan after them: if one does, that is a bug, and nothing more is
/// written (release builds check it too; a `debug_assert!` would vanish there).
fn no_block_after_early_adds(written: usize, blocked: Option<&str>) -> Result<(), CycleError> {
    match blocked {
        Some(why) if written > 0 => Err(CycleError::Invariant(format!(
            "{written} groups were added before the whole tenant was read, and the whole plan is now \
             stopped ({why}); nothing more is written. This should not happen: please report it. \
             The next cycle finds those groups by their marker"
        ))),
        _ => Ok(()),
    }
}

/// Each failed operation, and each member value that could not be written, as an error.
fn apply_errors(applied: &[(&Operation, &OpOutcome)]) -> Vec<ObjectError> {
    let mut out = Vec::new();
    for (_, o) in applied {
        if let Some(e) = &o.error {
            let message = format!("{} failed: {e}", o.op);
            out.push(ObjectError { cloud_id: o.cloud_id.to_string(), member_id: None, message });
        }
        for (member, e) in &o.member_errors {
            out.push(ObjectError {
                cloud_id: o.cloud_id.to_string(),
                member_id: Some(member.clone()),
                message: e.clone(),
            });
        }
    }
    out
}

/// Counts of what was actually written: failed operations and failed member values are left
/// out. (`errors` is the caller's.)
fn applied_summary(plan: &Plan, applied: &[(&Operation, &OpOutcome)]) -> Summary {
    let mut s = Summary { skipped_members: plan.summary.skipped_members, ..Summary::default() };
    for (op, o) in applied {
        if o.error.is_none() {
            s.count(op);
        }
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
