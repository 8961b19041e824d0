//! What the commands print: short human text by default, one JSON document with `--json`.

use serde_json::json;
use writeback_ad::Preflight;
use writeback_core::plan::{MemberReport, MemberStatus, Plan};
use writeback_core::{render, Check, RunStatus, Summary};
use writeback_graph::{GraphClient, GraphConfig};
use writeback_store::{ErrorRecord, RunRecord};

use crate::config::Config;
use crate::cycle::RunResult;
use crate::engine::Shown;
use crate::exit;

/// Cloud text (names, and messages and DNs that quote them) on a terminal: control characters
/// and bidirectional overrides replaced, so a display name cannot rewrite the screen.
fn t(s: &str) -> std::borrow::Cow<'_, str> {
    writeback_core::naming::printable(s)
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

/// A run as `sync --json` prints it (also what the daemon answers a group request with).
pub fn sync_doc(r: &RunResult) -> serde_json::Value {
    let mut doc = json!({"run_id": r.run_id, "kind": r.kind, "status": r.status, "duration_ms": r.duration_ms});
    for (name, n) in r.summary.columns() {
        doc[name] = json!(n);
    }
    doc
}

pub fn sync(r: &RunResult, as_json: bool) -> u8 {
    let s = &r.summary;
    if as_json {
        print_json(&sync_doc(r));
    } else {
        println!(
            "run {} ({}): {} — {} ({:.1} s, {} Graph requests, {} LDAP operations)",
            r.run_id,
            r.kind,
            r.status,
            render::counts(s),
            r.duration_ms as f64 / 1000.0,
            r.graph_requests,
            r.ldap_operations
        );
        for e in &r.errors {
            match &e.member_id {
                Some(m) => println!("  error  group {}  member {}: {}", t(&e.cloud_id), t(m), t(&e.message)),
                None => println!("  error  group {}: {}", t(&e.cloud_id), t(&e.message)),
            }
        }
        if let Some(m) = &r.message {
            println!("{}", t(m));
        }
    }
    match r.status {
        RunStatus::Success => exit::OK,
        RunStatus::StoppedDeleteThreshold => {
            if let Some(m) = &r.message {
                eprintln!("stopped: {}", t(m));
            }
            exit::THRESHOLD
        }
        RunStatus::Quarantined | RunStatus::Failed => {
            if let Some(m) = &r.message {
                eprintln!("{}: {}", r.status, t(m));
            }
            exit::CANNOT_RUN
        }
        RunStatus::CompletedWithErrors | RunStatus::Running => exit::OBJECT_ERRORS,
    }
}

/// `writeback plan`: exit 3 when a sync would stop at a threshold or hold removals back.
pub fn plan(p: &Plan, summary_only: bool, as_json: bool) -> u8 {
    if as_json && summary_only {
        print_json(&json!({"summary": p.summary, "blocked": p.blocked.as_deref()}));
    } else if as_json {
        print_json(&json!({
            "summary": p.summary,
            "operations": p.operations,
            "errors": p.errors,
            "notices": p.notices,
            "blocked": p.blocked.as_deref()
        }));
    } else if summary_only {
        println!("plan: {}", render::counts(&p.summary));
        if let Some(b) = &p.blocked {
            println!("a sync would stop: {}", t(b));
        }
        if !p.held.is_empty() {
            println!("a sync would hold back the member removals of {} groups (see writeback plan)", p.held.len());
        }
    } else {
        print!("{}", render::plan(p));
    }
    if p.blocked.is_some() || !p.held.is_empty() {
        exit::THRESHOLD
    } else {
        exit::OK
    }
}

/// Which members `show` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MemberFilter {
    Written,
    Skipped,
}

pub struct ShowAs {
    /// Member lines at most (0: all).
    pub limit: usize,
    pub status: Option<MemberFilter>,
    pub as_json: bool,
}

pub fn show(shown: &Shown, needle: &str, how: &ShowAs) -> u8 {
    let p = match shown {
        Shown::Groups(p) => p,
        Shown::Candidates(near) => {
            if how.as_json {
                let near: Vec<_> = near.iter().map(|(id, n)| json!({"cloud_id": id, "display_name": n})).collect();
                print_json(&json!({"error": "no such group", "candidates": near}));
            }
            eprintln!("error: no group with the id or display name '{}'", t(needle));
            if !near.is_empty() {
                eprintln!("groups whose name has it:");
                for (id, name) in near {
                    eprintln!("  {}  {id}", t(name));
                }
            }
            return exit::OBJECT_ERRORS;
        }
    };
    let found = p.report(needle);
    if found.is_empty() {
        eprintln!("error: no group with the id or display name '{}' (in the cloud or owned in AD)", t(needle));
        return exit::OBJECT_ERRORS;
    }
    let wanted = |m: &&MemberReport| match how.status {
        Some(MemberFilter::Written) => m.status == MemberStatus::Written,
        Some(MemberFilter::Skipped) => m.status == MemberStatus::Skipped,
        None => true,
    };
    let limit = if how.limit == 0 { usize::MAX } else { how.limit };
    for g in found {
        let members: Vec<&MemberReport> = g.members_by_id().into_iter().filter(wanted).collect();
        if how.as_json {
            print_json(&json!({
                "cloud_id": g.cloud_id, "display_name": g.display_name, "in_scope": g.in_scope, "reason": g.reason,
                "dn": g.dn, "group_type": g.group_type, "action": g.action,
                "members": members.iter().take(limit).collect::<Vec<_>>(),
            }));
            continue;
        }
        let written = g.members.iter().filter(|m| m.status == MemberStatus::Written).count();
        println!("{} ({})", t(&g.display_name), t(&g.cloud_id));
        println!("  in scope:   {} — {}", if g.in_scope { "yes" } else { "no" }, t(&g.reason));
        println!("  AD:         {}", t(g.dn.as_deref().unwrap_or("(none)")));
        if let Some(t) = g.group_type {
            println!("  groupType:  {t}");
        }
        println!("  this run:   {}", t(&g.action));
        if g.in_scope {
            println!("  members:    {} in the cloud, {} written to AD", g.members.len(), written);
            for m in members.iter().take(limit) {
                let status = if m.status == MemberStatus::Written { "written" } else { "skipped" };
                let name = t(m.display_name.as_deref().unwrap_or(""));
                let via = m.via.as_deref().map(|v| format!(" via {}", t(v))).unwrap_or_default();
                println!(
                    "    {status:<8} {:<6} {}  {name:<24} {}{via}",
                    m.kind,
                    t(&m.cloud_id),
                    m.reason.map_or("", |r| r.as_str())
                );
            }
            if members.len() > limit {
                println!("    … and {} more (--members 0 lists all)", members.len() - limit);
            }
        }
    }
    exit::OK
}

pub fn history(runs: &[RunRecord], as_json: bool) {
    if as_json {
        print_json(&json!({ "runs": runs }));
        return;
    }
    if runs.is_empty() {
        println!("no runs yet");
        return;
    }
    let heads: String = Summary::HEADINGS.iter().map(|h| format!(" {h:>7}")).collect();
    println!("{:>5}  {:<24}  {:<5}  {:<25} {heads}", "run", "started", "kind", "status");
    for r in runs {
        let counts: String = r.counts.columns().iter().map(|(_, n)| format!(" {n:>7}")).collect();
        println!("{:>5}  {:<24}  {:<5}  {:<25} {counts}", r.run_id, r.started_at, r.kind, r.status);
    }
}

pub fn errors(errors: &[ErrorRecord], as_json: bool) {
    if as_json {
        print_json(&json!({ "errors": errors }));
        return;
    }
    if errors.is_empty() {
        println!("no current errors");
    }
    for e in errors {
        let member = e.member_id.as_deref().map(|m| format!("  member {}", t(m))).unwrap_or_default();
        println!(
            "group {}{member}\n  {}\n  since {} (last seen {})",
            t(&e.cloud_id),
            t(&e.message),
            e.since,
            e.last_seen
        );
    }
}

/// `writeback check`: one line per check; exit 0 only when every check passes. The Graph and
/// AD crates run their checks; this renders them.
/// The state: reachable (PostgreSQL: TLS, the password), its tables, and who leads.
async fn state_check(cfg: &Config) -> Result<String, String> {
    let target = cfg.state().map_err(|e| e.to_string())?;
    match writeback_store::Store::open_read_only(&target).await {
        Ok(None) => Ok(format!("{target}: no state yet (the first sync creates it)")),
        Ok(Some(store)) => {
            let leaders = store.leaders().await.map_err(|e| e.to_string())?;
            let links = store.link_count().await.map_err(|e| e.to_string())?;
            store.close().await;
            let lead = match leaders.first() {
                Some(l) => {
                    format!("; lead: {} (pid {}), epoch {}, last heartbeat {}", l.host, l.pid, l.epoch, l.heartbeat)
                }
                None => String::new(),
            };
            Ok(format!("{target}: readable, {links} links{lead}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

pub async fn check(cfg: &Config, as_json: bool) -> u8 {
    let mut results = vec![Check::new("config", Ok("parsed".into()))];
    // A preflight answers in seconds: one retry, not a cycle's back-off over a minute (a name
    // that does not resolve would otherwise keep the admin waiting for the hint).
    let graph = cfg.graph().map(|g| GraphConfig { max_retries: 1, ..g });
    match graph.map_err(|e| e.to_string()).and_then(|g| GraphClient::new(g).map_err(|e| e.to_string())) {
        Ok(graph) => results.extend(graph.check().await),
        Err(e) => results.push(Check::new("Graph", Err(e))),
    }
    match cfg.ad() {
        Err(e) => results.push(Check::new("AD", Err(format!("{e:#}")))),
        Ok(ad_cfg) => {
            let p = Preflight {
                target_ou: &cfg.ad.target_ou,
                adopt_from: &cfg.ad.adopt_from,
                write_owners: cfg.writeback.write_owners,
            };
            results.extend(writeback_ad::preflight(&ad_cfg, &p).await);
        }
    }
    results.push(Check::new("state", state_check(cfg).await));
    let ok = results.iter().all(|c| c.result.is_ok());
    if as_json {
        let checks: Vec<_> = results
            .iter()
            .map(|c| match &c.result {
                Ok(m) => json!({"check": c.name, "ok": true, "warning": c.warning, "detail": m}),
                Err(m) => json!({"check": c.name, "ok": false, "detail": m}),
            })
            .collect();
        print_json(&json!({"ok": ok, "checks": checks}));
    } else {
        for c in &results {
            match &c.result {
                Ok(m) if c.warning => println!("WARN  {}: {m}", c.name),
                Ok(m) => println!("ok    {}: {m}", c.name),
                Err(m) => println!("FAIL  {}: {m}", c.name),
            }
        }
    }
    if ok {
        exit::OK
    } else {
        exit::CANNOT_RUN
    }
}
