//! The daemon's listener: `/healthz`, `/metrics` (Prometheus), `POST /sync`, and a status page
//! (one HTML document, no external assets) with the run history, current errors and a search
//! box that explains one group as `writeback show` does.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use writeback_core::{GroupReport, MemberStatus, RunStatus, Summary};
use writeback_store::AuditQuery;

use crate::daemon::{Daemon, Role};

/// Member rows and groups the status page renders at most: a search matching thousands must
/// not hold the shared state (the cycle loop waits for it) or build a page of megabytes.
const MAX_MEMBER_ROWS: usize = 500;
const MAX_GROUPS_SHOWN: usize = 20;
/// Audit lines shown per group (`writeback log --group` has them all).
const MAX_CHANGES_SHOWN: usize = 20;

pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/sync", post(sync_now))
        .route("/api/status", get(status_json))
        .layer(middleware::from_fn_with_state(d.clone(), guard))
        .with_state(d)
}

/// Every request: addressed to a host name the listener knows (a rebound DNS name is not), and
/// with the token when one is set (`/healthz` is open: probes carry no secrets).
async fn guard(State(d): State<Arc<Daemon>>, req: Request, next: Next) -> Response {
    // A Host header that is not text is refused, not replaced by the URI's authority.
    let host = match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok(),
        None => req.uri().host(),
    };
    if !d.access.host_allowed(host) {
        metrics::counter!("writeback_http_refused_total", "reason" => "host").increment(1);
        return (
            StatusCode::MISDIRECTED_REQUEST,
            Json(
                json!({"error": "this listener does not answer for that host name; add it to [daemon] allowed_hosts"}),
            ),
        )
            .into_response();
    }
    let auth = req.headers().get(header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    if req.uri().path() != "/healthz" && !d.access.authorized(auth) {
        metrics::counter!("writeback_http_refused_total", "reason" => "token").increment(1);
        let mut resp =
            (StatusCode::UNAUTHORIZED, Json(json!({"error": "the token from [daemon] token_file is needed"})))
                .into_response();
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"writeback\""));
        return resp;
    }
    next.run(req).await
}

/// Open to probes without the token; the reason (it can name groups and DNs) only with it.
async fn healthz(State(d): State<Arc<Daemon>>, headers: HeaderMap) -> Response {
    let (ok, reason) = d.health();
    let role = d.status().role;
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let auth = headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    if d.access.authorized(auth) {
        (code, Json(json!({"healthy": ok, "role": role, "reason": reason}))).into_response()
    } else {
        (code, Json(json!({"healthy": ok, "role": role}))).into_response()
    }
}

async fn metrics(State(d): State<Arc<Daemon>>) -> Response {
    let since = d.status().last_success.map(|(t, _)| t.elapsed()).unwrap_or_else(|| d.started.elapsed());
    metrics::gauge!("writeback_seconds_since_last_success").set(since.as_secs_f64());
    metrics::gauge!("writeback_active").set(if d.status().role == Role::Active { 1.0 } else { 0.0 });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], d.metrics.render()).into_response()
}

/// A refused `POST /sync`, counted by `label` (`writeback_http_refused_total`).
fn refused(code: StatusCode, label: &'static str, reason: &str, retry_after: Option<Duration>) -> Response {
    metrics::counter!("writeback_http_refused_total", "reason" => label).increment(1);
    let mut resp = (code, Json(json!({"queued": false, "reason": reason}))).into_response();
    if let Some(wait) = retry_after {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

/// `POST /sync`: a cycle soon. Only a JSON request from no browser or this listener's own page
/// (a cross-site form or `fetch` can send neither the type nor the origin), never during a
/// back-off or quarantine, at most one per interval.
async fn sync_now(State(d): State<Arc<Daemon>>, headers: HeaderMap) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok());
    if !d.access.origin_allowed(origin) {
        return refused(StatusCode::FORBIDDEN, "origin", "requests from other web sites are refused", None);
    }
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type",
            "send Content-Type: application/json",
            None,
        );
    }
    let mut s = d.status();
    if s.role != Role::Active {
        return refused(StatusCode::CONFLICT, "standby", "this instance is not the active one", None);
    }
    let until_next = s.next_cycle.map(|n| n.saturating_duration_since(Instant::now()));
    if s.failures > 0 {
        let why = match &s.quarantined {
            Some(q) => format!("quarantined ({q}): the next attempt is at the end of the back-off"),
            None => "backing off after failed cycles: the next attempt is at the end of the back-off".to_string(),
        };
        return refused(StatusCode::SERVICE_UNAVAILABLE, "back-off", &why, until_next);
    }
    if let Some(wait) = s.last_requested.map(|t| s.interval.saturating_sub(t.elapsed())).filter(|w| !w.is_zero()) {
        return refused(StatusCode::TOO_MANY_REQUESTS, "rate", "one requested cycle per interval", Some(wait));
    }
    s.last_requested = Some(Instant::now());
    drop(s);
    d.requested.notify_one();
    (StatusCode::ACCEPTED, Json(json!({"queued": true}))).into_response()
}

async fn status_json(State(d): State<Arc<Daemon>>) -> Response {
    let (healthy, reason) = d.health();
    let s = d.status();
    Json(json!({
        "role": s.role, "healthy": healthy, "reason": reason, "failures": s.failures, "backoff": s.backoff_reason,
        "quarantined": s.quarantined, "running": s.running,
        "last_cycle": s.last_cycle.as_ref().map(|c| json!({"kind": c.kind, "status": c.status, "message": c.message,
            "at": c.at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)})),
    }))
    .into_response()
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(t: SystemTime) -> String {
    let s = SystemTime::now().duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    format!("{s} s ago")
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:20px}\
h2{font-size:16px;margin-top:2em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}\
td.l,th.l{text-align:left}.ok{color:#176b2c}.bad{color:#b00020}.muted{color:#777}\
input{font:inherit;padding:3px;width:24em}";

async fn page(State(d): State<Arc<Daemon>>, Query(q): Query<HashMap<String, String>>) -> Html<String> {
    let (healthy, reason) = d.health();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=utf-8><title>writeback</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(h, "<h1>writeback</h1><p>Target OU <b>{}</b></p>", esc(&d.cfg().ad.target_ou));
    {
        let s = d.status();
        let class = if healthy { "ok" } else { "bad" };
        let _ = write!(h, "<p>Role: <b>{:?}</b> — <span class={class}>{}</span>", s.role, esc(&reason));
        if let Some(k) = s.running {
            let _ = write!(h, " — a {k} cycle is running");
        }
        if let Some((_, at)) = s.last_success {
            let _ = write!(h, " — last success {}", ago(at));
        }
        if let Some(q) = &s.quarantined {
            let _ = write!(h, "<br><span class=bad><b>Quarantined</b>: writing is stopped — {}</span>", esc(q));
        }
        if let Some(b) = &s.backoff_reason {
            let _ = write!(h, "<br><span class=bad>Backing off: {}</span>", esc(b));
        }
        h.push_str("</p>");
    }
    let needle = q.get("group").map(|s| s.trim().to_string()).unwrap_or_default();
    let _ = write!(
        h,
        "<form method=get><input name=group placeholder='group object id or \
            display name' value=\"{}\"> <button>Show</button></form>",
        esc(&needle)
    );
    if !needle.is_empty() {
        let groups = found(&d, &needle);
        h.push_str(&show(&groups, &needle));
        // A group no cycle has planned yet (or one deleted) still has its trail.
        let ids: Vec<String> = match groups.is_empty() {
            true => vec![needle.clone()],
            false => groups.into_iter().map(|g| g.cloud_id.to_string()).collect(),
        };
        let state = d.cfg().state_path();
        let trail = tokio::task::spawn_blocking(move || recent_changes(&state, ids)).await;
        h.push_str(&trail.unwrap_or_else(|e| format!("<p class=bad>{}</p>", esc(&e.to_string()))));
    }
    let state = d.cfg().state_path();
    // SQLite is read off the async workers: a slow disk must not stall the listener.
    let runs = tokio::task::spawn_blocking(move || history(&state)).await;
    h.push_str(&runs.unwrap_or_else(|e| format!("<p class=bad>{}</p>", esc(&e.to_string()))));
    h.push_str("</body></html>");
    Html(h)
}

/// The groups a search names, copied out of the shared state (which the cycle loop also takes)
/// before anything is rendered: at most [`MAX_GROUPS_SHOWN`], members shared, not copied.
fn found(d: &Daemon, needle: &str) -> Vec<GroupReport> {
    let s = d.status();
    let lower = needle.to_lowercase();
    let exact: Vec<GroupReport> = s
        .reports
        .values()
        .filter(|g| g.cloud_id == needle || g.display_name == needle)
        .take(MAX_GROUPS_SHOWN)
        .cloned()
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    s.reports
        .values()
        .filter(|g| g.display_name.to_lowercase().contains(&lower))
        .take(MAX_GROUPS_SHOWN)
        .cloned()
        .collect()
}

fn show(found: &[GroupReport], needle: &str) -> String {
    let mut h = String::new();
    if found.is_empty() {
        let _ = write!(h, "<p class=bad>No group matches “{}” in the last cycles.</p>", esc(needle));
    }
    for g in found {
        let written = g.members.iter().filter(|m| m.status == MemberStatus::Written).count();
        let _ = write!(
            h,
            "<h2>{} <span class=muted>{}</span></h2><p>In scope: <b>{}</b> — \
                {}<br>AD: {}<br>groupType: {}<br>Last cycle: {}</p>",
            esc(&g.display_name),
            esc(&g.cloud_id),
            if g.in_scope { "yes" } else { "no" },
            esc(&g.reason),
            esc(g.dn.as_deref().unwrap_or("(none)")),
            g.group_type.map(|t| t.to_string()).unwrap_or_default(),
            esc(&g.action)
        );
        if g.in_scope {
            let _ = write!(
                h,
                "<p>Members: {} in the cloud, {} written to AD</p><table><tr><th \
                class=l>status</th><th class=l>type</th><th class=l>member</th><th \
                class=l>name</th><th class=l>reason</th></tr>",
                g.members.len(),
                written
            );
            let members = g.members_by_id();
            for m in members.iter().take(MAX_MEMBER_ROWS) {
                let st = if m.status == MemberStatus::Written { "written" } else { "skipped" };
                let _ = write!(
                    h,
                    "<tr><td class=l>{st}</td><td class=l>{}</td><td class=l>{}</td><td \
                        class=l>{}</td><td class=l>{}</td></tr>",
                    esc(m.kind),
                    esc(&m.cloud_id),
                    esc(m.display_name.as_deref().unwrap_or("")),
                    esc(m.reason.map_or("", |r| r.as_str()))
                );
            }
            h.push_str("</table>");
            if members.len() > MAX_MEMBER_ROWS {
                let _ = write!(
                    h,
                    "<p class=muted>… and {} more members: <code>writeback show {}</code> lists them all.</p>",
                    members.len() - MAX_MEMBER_ROWS,
                    esc(&g.cloud_id)
                );
            }
        }
    }
    h
}

/// Changes the audit trail recorded for these groups, newest first (`writeback log --group`).
fn recent_changes(state: &std::path::Path, groups: Vec<String>) -> String {
    let mut h = String::new();
    for id in groups {
        let q = AuditQuery { group: Some(id.clone()), limit: MAX_CHANGES_SHOWN, ..AuditQuery::default() };
        let entries = match writeback_store::Store::open_read_only(state).and_then(|s| match s {
            Some(s) => s.audit(&q),
            None => Ok(Vec::new()),
        }) {
            Ok(e) => e,
            Err(e) => return h + &format!("<p class=bad>The audit trail cannot be read: {}</p>", esc(&e.to_string())),
        };
        let _ = write!(h, "<h2>Recent changes in AD <span class=muted>{}</span></h2>", esc(&id));
        if entries.is_empty() {
            h.push_str("<p class=muted>None recorded.</p>");
            continue;
        }
        h.push_str(
            "<table><tr><th class=l>when</th><th>run</th><th class=l>change</th><th class=l>member</th>\
             <th class=l>why</th></tr>",
        );
        for e in &entries {
            let member = e.member_name.as_deref().or(e.member_dn.as_deref()).unwrap_or("");
            let _ = write!(
                h,
                "<tr><td class=l>{}</td><td>{}</td><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td></tr>",
                esc(&e.at),
                e.run_id,
                e.op.as_str(),
                esc(member),
                esc(&e.why)
            );
        }
        h.push_str("</table>");
    }
    h
}

/// The run history and the current errors, or the reason they cannot be read (shown, not
/// swallowed).
fn history(state: &std::path::Path) -> String {
    let mut h = String::from("<h2>Run history</h2>");
    let recorded = match writeback_store::recorded(state, 50) {
        Ok(r) => r,
        Err(e) => return h + &format!("<p class=bad>The state cannot be read: {}</p>", esc(&e.to_string())),
    };
    if recorded.runs.is_empty() {
        h.push_str("<p class=muted>No runs yet.</p>");
    } else {
        h.push_str("<table><tr><th>run</th><th class=l>started</th><th class=l>kind</th><th class=l>status</th>");
        for head in Summary::HEADINGS {
            let _ = write!(h, "<th>{}</th>", esc(head));
        }
        h.push_str("<th>ms</th></tr>");
    }
    for r in &recorded.runs {
        let class = match r.status {
            RunStatus::Success => "ok",
            RunStatus::Running => "muted",
            _ => "bad",
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=l>{}</td><td class=l>{}</td><td class='l {class}' title=\"{}\">{}</td>",
            r.run_id,
            esc(&r.started_at),
            r.kind,
            esc(r.message.as_deref().unwrap_or("")),
            r.status
        );
        for (_, n) in r.counts.columns() {
            let _ = write!(h, "<td>{n}</td>");
        }
        let _ = write!(h, "<td>{}</td></tr>", r.duration_ms);
    }
    if !recorded.runs.is_empty() {
        h.push_str("</table>");
    }
    h.push_str("<h2>Current errors</h2>");
    if recorded.errors.is_empty() {
        h.push_str("<p class=ok>None.</p>");
        return h;
    }
    h.push_str(
        "<table><tr><th class=l>group</th><th class=l>member</th><th class=l>error</th><th class=l>since</th></tr>",
    );
    for e in &recorded.errors {
        let _ = write!(
            h,
            "<tr><td class=l><a href=\"?group={}\">{}</a></td><td class=l>{}</td><td \
                class='l bad'>{}</td><td class=l>{}</td></tr>",
            esc(&e.cloud_id),
            esc(&e.cloud_id),
            esc(e.member_id.as_deref().unwrap_or("")),
            esc(&e.message),
            esc(&e.since)
        );
    }
    h.push_str("</table>");
    h
}

#[cfg(test)]
#[path = "web_tests.rs"]
mod tests;
