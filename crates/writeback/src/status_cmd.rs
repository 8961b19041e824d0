//! `writeback status`, `history` and `errors`: what an administrator asks first — is a daemon
//! running, is it writing, when does it run next, why did the last cycle fail or stop, what is
//! waiting for an approval — then the runs and the errors.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use writeback_core::naming::printable;
use writeback_core::{RunStatus, Stopped};
use writeback_store::{Approval, RunRecord, Store};

use crate::config::Config;
use crate::error::CycleError;
use crate::published::{self, Published};
use crate::{exit, output};

/// `history --status`: a run status as the JSON contract spells it.
pub fn parse_status(s: &str) -> Result<RunStatus, String> {
    RunStatus::parse(s).ok_or_else(|| {
        let all: Vec<&str> = RunStatus::ALL.iter().map(|r| r.as_str()).collect();
        format!("one of {}", all.join(", "))
    })
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The last run, when it did not do its work: what `errors` and `status` say first.
fn failed_run(runs: &[RunRecord]) -> Option<&RunRecord> {
    runs.first().filter(|r| !r.status.done() && r.status != RunStatus::Running)
}

fn run_line(r: &RunRecord) -> String {
    format!(
        "run {} ({}) {} at {}{}",
        r.run_id,
        r.kind,
        r.status,
        r.started_at,
        r.message.as_deref().map(|m| format!(": {}", printable(m))).unwrap_or_default()
    )
}

/// Instances not seen for this long are not listed (they beat every few seconds).
pub const INSTANCES_SEEN: std::time::Duration = std::time::Duration::from_secs(120);

pub async fn status(cfg: &Config, limit: usize, as_json: bool) -> Result<u8, CycleError> {
    let store = Store::open_read_only(&cfg.state()?).await?;
    let (daemon, runs, stopped, open, instances, leaders) = match &store {
        Some(s) => (
            published::running(s).await,
            s.runs(limit).await?,
            s.stopped().await?,
            s.open_approvals().await?,
            s.instances(INSTANCES_SEEN).await?,
            s.leaders().await?,
        ),
        None => (None, Vec::new(), Stopped::default(), Vec::new(), Vec::new(), Vec::new()),
    };
    if as_json {
        let doc = json!({
            "daemon": daemon, "stopped": stopped, "approve": stopped.approve_commands(),
            "open_approvals": open, "runs": runs, "instances": instances, "leader": leaders.first(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(exit::OK);
    }
    println!("{}", daemon_line(daemon.as_ref()));
    for l in &leaders {
        println!("lead: {} (pid {}), epoch {}, since {}", printable(&l.host), l.pid, l.epoch, l.since);
    }
    for i in &instances {
        let at = i.address.as_deref().map(|a| format!(" at {}", printable(a))).unwrap_or_default();
        println!("instance: {} (pid {}) {}{at}, last seen {}", printable(&i.host), i.pid, i.role, i.last_seen);
    }
    match runs.first() {
        Some(r) => println!("last cycle: {}", run_line(r)),
        None => println!("last cycle: none yet"),
    }
    for cmd in stopped.approve_commands() {
        println!("to go ahead: {cmd}");
    }
    for g in &stopped.guarded {
        println!("held by the Tier-0 guard: {}", printable(&g.describe()));
    }
    print_open(&open);
    println!();
    output::history(&runs, false);
    Ok(exit::OK)
}

fn daemon_line(d: Option<&Published>) -> String {
    let Some(d) = d else { return "daemon: not running on this state database".into() };
    let next = match d.next_cycle_at {
        Some(at) if at > now() => format!("next cycle in {} s", at - now()),
        Some(_) => "a cycle is due now".into(),
        None => "no cycle planned".into(),
    };
    let health = if d.healthy { "healthy".to_string() } else { format!("NOT healthy: {}", printable(&d.reason)) };
    let host = d.host.as_deref().map(|h| format!(" on {}", printable(h))).unwrap_or_default();
    format!("daemon: {} (pid {}){host}, {health}; {next} (every {} s)", d.role, d.pid, d.interval_s)
}

fn print_open(open: &[Approval]) {
    for a in open {
        println!("approved for the next cycle: #{} by {} at {}: {}", a.id, a.who, a.created_at, a.approve.describe());
    }
}

pub async fn history(cfg: &Config, limit: usize, status: Option<RunStatus>, as_json: bool) -> Result<u8, CycleError> {
    // Filtered runs are searched among all of them, then limited.
    let fetch = if status.is_some() { usize::MAX / 2 } else { limit };
    let mut runs = writeback_store::recorded(&cfg.state()?, fetch).await?.runs;
    if let Some(s) = status {
        runs.retain(|r| r.status == s);
        runs.truncate(limit);
    }
    output::history(&runs, as_json);
    Ok(exit::OK)
}

pub async fn errors(cfg: &Config, as_json: bool) -> Result<u8, CycleError> {
    let recorded = writeback_store::recorded(&cfg.state()?, 1).await?;
    let run = failed_run(&recorded.runs);
    if as_json {
        println!("{}", json!({ "run": run, "errors": recorded.errors }));
        return Ok(exit::OK);
    }
    if let Some(r) = run {
        println!("the last run did not do its work: {}", run_line(r));
    }
    output::errors(&recorded.errors, false);
    Ok(exit::OK)
}
