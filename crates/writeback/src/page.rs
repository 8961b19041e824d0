//! The status page: the dashboard an operator opens first. What is wrong now and the command
//! that resolves it, every written group with its state (and a filter), the last day's cycle
//! durations and propagation, one group explained, the runs and the errors. One document, no
//! external assets; rendered with maud, which escapes every value it is given, so cloud text
//! (display names, DNs, error messages) cannot become markup.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use maud::{html, Markup, PreEscaped, DOCTYPE};
use writeback_core::{CloudId, GroupReport, Guarded, MemberStatus, RunKind, RunStatus, Stopped, Summary};
use writeback_store::{AuditEntry, Recorded, RunRecord};

use crate::charts;
use crate::daemon::Role;

/// Rows the page renders at most: a page for 10,000 groups stays small; the filter finds the rest.
pub const MAX_GROUP_ROWS: usize = 500;
pub const MAX_MEMBER_ROWS: usize = 500;
/// Runs listed in the history table (the charts use the whole day).
const MAX_RUN_ROWS: usize = 50;

/// What the daemon knows now (copied out of its status, which the cycle loop also takes).
pub struct Live {
    pub target_ou: String,
    pub role: Role,
    pub healthy: bool,
    pub reason: String,
    pub running: Option<RunKind>,
    pub last_success_ago: Option<u64>,
    pub quarantined: Option<String>,
    pub threshold: Option<String>,
    pub backoff: Option<String>,
    pub lock_lost: bool,
    pub guarded: Vec<Guarded>,
    pub interval: Duration,
    pub propagation: Option<Duration>,
    pub now: i64,
}

/// What the state holds for the page (read off the async workers).
pub struct Stored {
    pub recorded: Result<Recorded, String>,
    /// The runs of the last day, for the charts.
    pub day: Vec<RunRecord>,
    pub stopped: Stopped,
    /// Per group asked for: its recent audit lines.
    pub trail: Vec<(String, Result<Vec<AuditEntry>, String>)>,
    /// Who leads, and every instance that has the state open (several hosts share a
    /// PostgreSQL state: a standby shows the active one here).
    pub leaders: Vec<writeback_store::Leader>,
    pub instances: Vec<writeback_store::Instance>,
}

/// A written group's line on the page.
pub struct GroupRow {
    pub cloud_id: CloudId,
    pub name: String,
    pub dn: String,
    pub members: usize,
    pub written: usize,
    pub action: String,
}

impl GroupRow {
    pub fn of(g: &GroupReport) -> GroupRow {
        GroupRow {
            cloud_id: g.cloud_id.clone(),
            name: g.display_name.clone(),
            dn: g.dn.clone().unwrap_or_default(),
            members: g.members.len(),
            written: g.members.iter().filter(|m| m.status == MemberStatus::Written).count(),
            action: g.action.clone(),
        }
    }
}

/// A group's state on the dashboard, worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupState {
    Guard,
    Threshold,
    Error,
    InSync,
}

impl GroupState {
    const ALL: [GroupState; 4] = [GroupState::Guard, GroupState::Threshold, GroupState::Error, GroupState::InSync];

    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Guard => "held by the guard",
            GroupState::Threshold => "held by a threshold",
            GroupState::Error => "error",
            GroupState::InSync => "in sync",
        }
    }

    fn key(self) -> &'static str {
        match self {
            GroupState::Guard => "guard",
            GroupState::Threshold => "threshold",
            GroupState::Error => "error",
            GroupState::InSync => "in-sync",
        }
    }

    pub fn parse(key: &str) -> Option<GroupState> {
        GroupState::ALL.into_iter().find(|s| s.key() == key)
    }
}

/// The filter of the group list: a part of the name, id or DN (any case), and a state.
#[derive(Default)]
pub struct Filter {
    pub text: String,
    pub state: Option<GroupState>,
}

impl Filter {
    pub fn from_query(q: &HashMap<String, String>) -> Filter {
        Filter {
            text: q.get("filter").map(|s| s.trim().to_string()).unwrap_or_default(),
            state: q.get("state").and_then(|s| GroupState::parse(s)),
        }
    }

    fn keeps(&self, row: &GroupRow, state: GroupState) -> bool {
        let text = self.text.to_lowercase();
        self.state.is_none_or(|s| s == state)
            && (text.is_empty()
                || [row.name.as_str(), row.cloud_id.as_str(), row.dn.as_str()]
                    .iter()
                    .any(|f| f.to_lowercase().contains(&text)))
    }
}

/// Each group's state: held by the guard or its removals by a threshold (as the last cycle
/// recorded), with a current error, or in sync. A run a threshold stopped as a whole is the
/// incident above the list, not a state of every group.
pub fn state_of(row: &GroupRow, live: &Live, stopped: &Stopped, errors: &BTreeSet<&str>) -> GroupState {
    if live.guarded.iter().chain(&stopped.guarded).any(|g| g.cloud_id == row.cloud_id) {
        GroupState::Guard
    } else if stopped.held.iter().any(|h| h.cloud_id == row.cloud_id) {
        GroupState::Threshold
    } else if errors.contains(row.cloud_id.as_str()) {
        GroupState::Error
    } else {
        GroupState::InSync
    }
}

/// What is wrong now, each with the command that resolves it.
pub struct Incident {
    pub title: &'static str,
    pub detail: String,
    pub commands: Vec<String>,
}

/// The current incidents, the most serious first; none when all is well.
pub fn incidents(live: &Live, stopped: &Stopped) -> Vec<Incident> {
    let mut out = Vec::new();
    let now = "systemctl kill -s USR1 writeback   # a cycle now, once the cause is fixed".to_string();
    if live.lock_lost {
        out.push(Incident {
            title: "The state lock file was removed or replaced: this instance stopped writing",
            detail: "another writeback may be writing the same state".into(),
            commands: vec!["writeback status".into(), "systemctl restart writeback".into()],
        });
    }
    if let Some(q) = &live.quarantined {
        out.push(Incident {
            title: "Quarantined: writing to AD is stopped",
            detail: q.clone(),
            commands: vec!["writeback check".into(), now.clone()],
        });
    } else if let Some(b) = &live.backoff {
        out.push(Incident {
            title: "Cycles are failing: backing off",
            detail: b.clone(),
            commands: vec!["writeback check".into(), "writeback errors".into(), now.clone()],
        });
    }
    if let Some(t) = &live.threshold {
        let mut commands = stopped.approve_commands();
        commands.push("systemctl kill -s USR1 writeback   # the approved cycle now".into());
        out.push(Incident { title: "Stopped by a threshold", detail: t.clone(), commands });
    }
    for g in &live.guarded {
        out.push(Incident {
            title: "The Tier-0 guard holds back new members",
            detail: format!("{}: {} new members; {}", g.display_name, g.held, g.path),
            commands: vec![g.resolution()],
        });
    }
    out
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}h1{font-size:20px}\
h2{font-size:16px;margin-top:2em}table{border-collapse:collapse;max-width:100%}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3;white-space:nowrap}\
.nw{white-space:nowrap}td.w{overflow-wrap:anywhere;min-width:8em;max-width:32em}td.l,th.l{text-align:left}\
.ok{color:#176b2c}.bad{color:#b00020}\
.muted{color:#777}.warn{color:#8a5a00}input,select{font:inherit;padding:3px}input[name=group]{width:24em}\
.incident{border:2px solid #b00020;background:#fff4f4;padding:8px 12px;margin:1em 0}.incident h2{margin:0 0 4px}\
pre{background:#f6f6f6;padding:6px;margin:4px 0;white-space:pre-wrap}.charts{display:flex;flex-wrap:wrap;gap:1em}\
figure{margin:0}svg text{font:11px system-ui,sans-serif;fill:#555}svg .axis{stroke:#999}\
svg .mark{stroke:#b36b00;stroke-dasharray:4 3}svg text.mark{fill:#b36b00;stroke:none}\
svg .series{fill:none;stroke:#3b6ea8;stroke-width:1.2}svg .pt.ok{fill:#3b6ea8}svg .pt.bad{fill:#b00020}";

/// The whole page.
pub fn render(
    live: &Live,
    stored: &Stored,
    rows: &[GroupRow],
    filter: &Filter,
    needle: &str,
    found: &[GroupReport],
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "writeback" } style { (PreEscaped(STYLE)) } }
            body {
                h1 { "writeback" }
                (header(live))
                (instances(stored))
                @for i in incidents(live, &stored.stopped) {
                    section.incident {
                        h2.bad { (i.title) }
                        p { (i.detail) }
                        @for c in &i.commands { pre { code { (c) } } }
                    }
                }
                (groups(live, stored, rows, filter))
                (charts_of(live, stored))
                h2 { "Explain one group" }
                form method="get" {
                    input name="group" placeholder="group object id or display name" value=(needle);
                    " " button { "Show" }
                }
                @if !needle.is_empty() {
                    (show(found, needle)) (trail(stored))
                    script { (PreEscaped(SYNC_NOW_SCRIPT)) }
                }
                (history(stored))
            }
        }
    }
}

/// The lead and the instances (shown once there is more than this one, or a lead elsewhere).
fn instances(stored: &Stored) -> Markup {
    html! {
        @for l in &stored.leaders {
            p.lead { "Active instance: " b { (l.host) } " (pid " (l.pid) ", epoch " (l.epoch) ", since " (l.since)
                @if let Some(a) = &l.address { ", " (a) } ")" }
        }
        @if stored.instances.len() > 1 {
            table.instances {
                tr { th { "host" } th { "pid" } th { "role" } th { "listener" } th { "last seen" } }
                @for i in &stored.instances {
                    tr { td { (i.host) } td { (i.pid) } td { (i.role) } td { (i.address.as_deref().unwrap_or("")) }
                        td { (i.last_seen) } }
                }
            }
        }
    }
}

fn header(live: &Live) -> Markup {
    let role = match live.role {
        Role::Active => "active",
        Role::Standby => "standby",
        Role::Stopping => "stopping",
    };
    html! {
        p { "Target OU " b { (live.target_ou) } }
        p {
            "Role: " b { (role) } " — " span class=(if live.healthy { "ok" } else { "bad" }) { (live.reason) }
            @if let Some(k) = live.running { " — a " (k) " cycle is running" }
            @if let Some(s) = live.last_success_ago { " — last success " (s) " s ago" }
            @if let Some(p) = live.propagation { " — propagation " (p.as_secs()) " s" }
        }
    }
}

fn groups(live: &Live, stored: &Stored, rows: &[GroupRow], filter: &Filter) -> Markup {
    let errors: BTreeSet<&str> = match &stored.recorded {
        Ok(r) => r.errors.iter().map(|e| e.cloud_id.as_str()).collect(),
        Err(_) => BTreeSet::new(),
    };
    let mut states: Vec<(GroupState, &GroupRow)> =
        rows.iter().map(|r| (state_of(r, live, &stored.stopped, &errors), r)).collect();
    let mut counts: HashMap<GroupState, usize> = HashMap::new();
    for (s, _) in &states {
        *counts.entry(*s).or_default() += 1;
    }
    states.retain(|(s, r)| filter.keeps(r, *s));
    states.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.to_lowercase().cmp(&b.1.name.to_lowercase())));
    html! {
        h2 { "Groups in scope" }
        p {
            (rows.len()) " groups"
            @for s in GroupState::ALL {
                " · " a href={ "?state=" (s.key()) } { (counts.get(&s).copied().unwrap_or(0)) " " (s.as_str()) }
            }
        }
        form method="get" id="group-filter" {
            input name="filter" placeholder="part of a name, id or DN" value=(filter.text);
            " " select name="state" {
                option value="" { "any state" }
                @for s in GroupState::ALL {
                    option value=(s.key()) selected[filter.state == Some(s)] { (s.as_str()) }
                }
            }
            " " button { "Filter" }
        }
        @if rows.is_empty() {
            p.muted { "No group written yet: the first full cycle lists them." }
        } @else if states.is_empty() {
            p.muted { "No group matches the filter." }
        } @else {
            table #groups {
                tr {
                    th.l { "state" } th.l { "group" } th.l { "AD" } th { "members" } th { "written" }
                    th.l { "last cycle" }
                }
                @for (s, r) in states.iter().take(MAX_GROUP_ROWS) {
                    tr {
                        td class=(if *s == GroupState::InSync { "l ok nw" } else { "l bad nw" }) { (s.as_str()) }
                        td.l.w { a href={ "?group=" (query(&r.cloud_id)) } { (r.name) } }
                        td.l.w { (r.dn) }
                        td { (r.members) }
                        td { (r.written) }
                        td.l.w { (r.action) }
                    }
                }
            }
            @if states.len() > MAX_GROUP_ROWS {
                p.muted { "… and " (states.len() - MAX_GROUP_ROWS) " more: narrow the filter." }
            }
        }
    }
}

fn charts_of(live: &Live, stored: &Stored) -> Markup {
    let interval = live.interval.as_secs_f64();
    let durations = charts::durations(&stored.day, live.now);
    let propagation = charts::propagation(&stored.day, live.now);
    html! {
        h2 { "The last 24 hours" }
        div.charts {
            (charts::chart("chart-duration", "Cycle duration", &durations, live.now, None))
            (charts::chart("chart-propagation", "Propagation (cloud change to AD, at most)", &propagation, live.now,
                Some((interval * 3.0, "3 × interval: the alert"))))
        }
    }
}

/// Sends `POST /sync` with the button's group (a JSON request from this page: the listener's
/// origin and content type checks let it through, a cross-site form could not send it).
const SYNC_NOW_SCRIPT: &str = "document.querySelectorAll('button.syncnow').forEach(function(b){\
b.addEventListener('click',function(){var out=b.nextElementSibling;b.disabled=true;\
fetch('sync',{method:'POST',headers:{'Content-Type':'application/json'},\
body:JSON.stringify({groups:[b.dataset.group]})}).then(function(r){return r.json().then(function(j){\
out.textContent=r.status==202?' queued: synced in a few seconds (reload to see it)':' '+(j.reason||j.error||r.status);\
});}).catch(function(e){out.textContent=' '+e;}).finally(function(){b.disabled=false;});});});";

/// "Sync this group now", for one group object id.
fn sync_now(id: &str) -> Markup {
    html! { p { button.syncnow type="button" data-group=(id) { "Sync this group now" } span.muted {} } }
}

fn show(found: &[GroupReport], needle: &str) -> Markup {
    html! {
        @if found.is_empty() {
            p.bad { "No group matches “" (needle) "” in the last cycles." }
            @if writeback_core::naming::is_guid(needle) { (sync_now(needle)) }
        }
        @for g in found {
            @let members = g.members_by_id();
            @let written = g.members.iter().filter(|m| m.status == MemberStatus::Written).count();
            h2 { (g.display_name) " " span.muted { (g.cloud_id) } }
            (sync_now(g.cloud_id.as_str()))
            p {
                "In scope: " b { (if g.in_scope { "yes" } else { "no" }) } " — " (g.reason) br;
                "AD: " (g.dn.as_deref().unwrap_or("(none)")) br;
                "groupType: " (g.group_type.map(|t| t.to_string()).unwrap_or_default()) br;
                "Last cycle: " (g.action)
            }
            @if g.in_scope {
                p { "Members: " (g.members.len()) " in the cloud, " (written) " written to AD" }
                table {
                    tr { th.l { "status" } th.l { "type" } th.l { "member" } th.l { "name" } th.l { "reason" } }
                    @for m in members.iter().take(MAX_MEMBER_ROWS) {
                        tr.member {
                            td.l { (if m.status == MemberStatus::Written { "written" } else { "skipped" }) }
                            td.l { (m.kind) }
                            td.l { (m.cloud_id) }
                            td.l { (m.display_name.as_deref().unwrap_or("")) }
                            td.l {
                                (m.reason.map_or("", |r| r.as_str()))
                                @if let Some(v) = &m.via { " via " (v) }
                            }
                        }
                    }
                }
                @if members.len() > MAX_MEMBER_ROWS {
                    p.muted {
                        "… and " (members.len() - MAX_MEMBER_ROWS) " more members: "
                        code { "writeback show " (g.cloud_id) } " lists them all."
                    }
                }
            }
        }
    }
}

/// Changes the audit trail recorded for the groups asked for, newest first.
fn trail(stored: &Stored) -> Markup {
    html! {
        @for (id, entries) in &stored.trail {
            h2 { "Recent changes in AD " span.muted { (id) } }
            @match entries {
                Err(e) => p.bad { "The audit trail cannot be read: " (e) },
                Ok(e) if e.is_empty() => p.muted { "None recorded." },
                Ok(entries) => table {
                    tr { th.l { "when" } th { "run" } th.l { "change" } th.l { "member" } th.l { "why" } }
                    @for e in entries {
                        tr {
                            td.l { (e.at) } td { (e.run_id) } td.l { (e.op.as_str()) }
                            td.l { (e.member_name.as_deref().or(e.member_dn.as_deref()).unwrap_or("")) }
                            td.l { (e.why) }
                        }
                    }
                },
            }
        }
    }
}

/// The run history and the current errors, or the reason they cannot be read.
fn history(stored: &Stored) -> Markup {
    let recorded = match &stored.recorded {
        Ok(r) => r,
        Err(e) => return html! { h2 { "Run history" } p.bad { "The state cannot be read: " (e) } },
    };
    html! {
        h2 { "Run history" }
        @if recorded.runs.is_empty() { p.muted { "No runs yet." } } @else {
            table {
                tr {
                    th { "run" } th.l { "started" } th.l { "kind" } th.l { "status" }
                    @for head in Summary::HEADINGS { th { (head) } }
                    th { "ms" }
                }
                @for r in recorded.runs.iter().take(MAX_RUN_ROWS) {
                    tr {
                        td { (r.run_id) } td.l { (r.started_at) } td.l { (r.kind) }
                        td class=(run_class(r.status)) title=(r.message.as_deref().unwrap_or("")) { (r.status) }
                        @for (_, n) in r.counts.columns() { td { (n) } }
                        td { (r.duration_ms) }
                    }
                }
            }
        }
        h2 { "Current errors" }
        @if recorded.errors.is_empty() { p.ok { "None." } } @else {
            table {
                tr { th.l { "group" } th.l { "member" } th.l { "error" } th.l { "since" } }
                @for e in &recorded.errors {
                    tr {
                        td.l { a href={ "?group=" (query(&e.cloud_id)) } { (e.cloud_id) } }
                        td.l { (e.member_id.as_deref().unwrap_or("")) }
                        td.l.w.bad { (e.message) }
                        td.l { (e.since) }
                    }
                }
            }
        }
    }
}

/// A value in a link's query: percent-encoded (maud then escapes it for the attribute).
fn query(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

fn run_class(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Success => "l ok",
        RunStatus::Running => "l muted",
        _ => "l bad",
    }
}
