//! One cycle: read the cloud and AD, plan, and (for `sync`) apply and record.

use std::collections::BTreeSet;
use std::time::Instant;

use writeback_ad::{AdConn, ApplyReport};
use writeback_core::plan::Operation;
use writeback_core::planner::decisions;
use writeback_core::{member_anchors, AdSnapshot, CloudSnapshot, ObjectError, Plan, State, Summary};
use writeback_graph::GraphClient;
use writeback_store::Store;

use crate::config::Config;

/// Why a cycle could not run at all (exit status 4), as opposed to per-object errors.
#[derive(Debug)]
pub struct Fatal(pub String);

impl<E: std::fmt::Display> From<E> for Fatal {
    fn from(e: E) -> Self {
        Fatal(e.to_string())
    }
}

pub struct Snapshot {
    pub cloud: CloudSnapshot,
    pub ad: AdSnapshot,
    pub graph_requests: u64,
    pub graph_throttled: u64,
}

/// Reads everything a full cycle needs. Graph and LDAP reads overlap where they can.
pub async fn read(cfg: &Config, graph: &GraphClient, ad: &mut AdConn) -> Result<Snapshot, Fatal> {
    let ou = cfg.ad.target_ou.clone();
    let (groups, owned) = tokio::join!(graph.list_groups(), ad.read_owned_groups(&ou));
    let (groups, rejected) = groups?;
    let owned = owned?;
    let mut cloud = CloudSnapshot { groups, rejected, ..Default::default() };

    let in_scope: Vec<String> = decisions(&cloud).into_iter().filter(|(_, d)| d.in_scope).map(|(id, _)| id).collect();
    tracing::info!(
        groups = cloud.groups.len(),
        in_scope = in_scope.len(),
        owned_in_ad = owned.len(),
        "read the group lists"
    );
    cloud.members = graph.members_of(&in_scope).await;

    // The recycle bin matters only for owned groups the cloud no longer lists.
    let listed: BTreeSet<&str> = cloud.groups.iter().map(|g| g.id.as_str()).collect();
    if owned.iter().any(|g| !listed.contains(g.cloud_id.as_str())) {
        cloud.soft_deleted = graph.soft_deleted_groups().await?;
    }

    let anchors: Vec<_> = member_anchors(&cloud).into_iter().collect();
    let directory = ad.resolve(&anchors).await?;
    tracing::info!(anchors = anchors.len(), resolved = directory.len(), "resolved members in AD");
    let ad_snap = AdSnapshot { schema: ad.schema, groups: owned, directory };
    Ok(Snapshot {
        cloud,
        ad: ad_snap,
        graph_requests: graph.stats.requests(),
        graph_throttled: graph.stats.throttled(),
    })
}

pub async fn connect(cfg: &Config) -> Result<(GraphClient, AdConn), Fatal> {
    let graph = GraphClient::new(cfg.graph()?)?;
    let ad = AdConn::connect(&cfg.ad()?).await?;
    Ok((graph, ad))
}

/// The state from the database, without writing to it (for `plan`).
pub fn state_read_only(cfg: &Config) -> Result<State, Fatal> {
    Ok(match Store::open_read_only(&cfg.state_path())? {
        Some(s) => s.state()?,
        None => State::default(),
    })
}

/// A plan against the current cloud and AD; writes nothing anywhere.
pub async fn plan(cfg: &Config, allow_deletes: bool) -> Result<(Plan, Snapshot), Fatal> {
    let state = state_read_only(cfg)?;
    let (graph, mut ad) = connect(cfg).await?;
    let snap = read(cfg, &graph, &mut ad).await?;
    ad.close().await;
    let plan = writeback_core::plan(&snap.cloud, &snap.ad, &state, &cfg.planner(allow_deletes));
    Ok((plan, snap))
}

/// What `sync` reports.
pub struct RunResult {
    pub run_id: i64,
    pub kind: &'static str,
    pub status: &'static str,
    pub summary: Summary,
    pub errors: Vec<ObjectError>,
    pub duration_ms: i64,
    pub message: Option<String>,
}

/// One sync cycle, recorded in the state database whatever happens.
pub async fn sync(cfg: &Config, allow_deletes: bool) -> Result<RunResult, Fatal> {
    let started = Instant::now();
    let mut store = Store::open(&cfg.state_path())?;
    let kind = "full";
    let run_id = store.start_run(kind)?;
    let elapsed = |s: Instant| s.elapsed().as_millis() as i64;
    let outcome = sync_inner(cfg, allow_deletes, &mut store, run_id).await;
    match outcome {
        Ok((status, summary, errors, message)) => {
            let duration_ms = elapsed(started);
            store.finish_run(run_id, status, &summary, duration_ms, message.as_deref())?;
            Ok(RunResult { run_id, kind, status, summary, errors, duration_ms, message })
        }
        Err(Fatal(message)) => {
            store.finish_run(run_id, "failed", &Summary::default(), elapsed(started), Some(&message))?;
            Err(Fatal(message))
        }
    }
}

type Inner = (&'static str, Summary, Vec<ObjectError>, Option<String>);

async fn sync_inner(cfg: &Config, allow_deletes: bool, store: &mut Store, run_id: i64) -> Result<Inner, Fatal> {
    let state = store.state()?;
    let (graph, mut ad) = connect(cfg).await?;
    let snap = read(cfg, &graph, &mut ad).await?;
    let plan = writeback_core::plan(&snap.cloud, &snap.ad, &state, &cfg.planner(allow_deletes));
    if let Some(why) = &plan.blocked {
        ad.close().await;
        let mut s = plan.summary.clone();
        s.errors = plan.errors.len();
        return Ok(("stopped-delete-threshold", s, plan.errors.clone(), Some(why.clone())));
    }
    for n in &plan.notices {
        tracing::warn!("{n}");
    }
    tracing::info!(operations = plan.operations.len(), "applying the plan");
    let report = ad.apply(&plan, std::slice::from_ref(&cfg.ad.target_ou)).await;
    ad.close().await;

    let mut errors = plan.errors.clone();
    errors.extend(apply_errors(&report));
    let mut summary = applied_summary(&plan, &report);
    summary.errors = errors.len();

    // Links: every owned group we saw, updated by what this run created, renamed or deleted.
    let mut links: std::collections::BTreeMap<String, (String, String)> =
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
    store.replace_errors(run_id, &errors)?;
    tracing::info!(
        graph_requests = snap.graph_requests,
        graph_throttled = snap.graph_throttled,
        ldap_writes = report.ldap_writes,
        "cycle done"
    );
    let status = if errors.is_empty() { "success" } else { "completed-with-errors" };
    Ok((status, summary, errors, None))
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
