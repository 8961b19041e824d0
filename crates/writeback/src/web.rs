//! The daemon's listener: `/healthz`, `/metrics` (Prometheus), `POST /sync`, `/api/status`, and
//! the status page (rendered by `page`) with what it needs copied out of the daemon's status
//! and read from the state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use writeback_core::{GroupReport, Stopped};
use writeback_store::{AuditQuery, Recorded, RunRecord};

use crate::daemon::{Daemon, Role};
use crate::page::{Filter, GroupRow, Live, Stored};

/// Groups a search explains at most: a search matching thousands must not hold the shared
/// state (the cycle loop waits for it) or build a page of megabytes.
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

/// The body of `POST /sync`: empty (a cycle), or the groups to sync now.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncRequest {
    #[serde(default)]
    groups: Vec<String>,
}

/// Groups one request may name.
const MAX_GROUPS_PER_REQUEST: usize = 50;

/// `POST /sync`: a cycle soon, or with `{"groups": [object ids]}` a group cycle of those. Only a
/// JSON request from no browser or this listener's own page (a cross-site form or `fetch` can
/// send neither the type nor the origin), never during a back-off or quarantine; a cycle at
/// most once per interval, groups up to a bounded queue.
async fn sync_now(State(d): State<Arc<Daemon>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
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
        let leader = s.leader.clone();
        drop(s);
        let why = match &leader {
            Some(l) => format!(
                "this instance is a standby: the active one is {} (pid {}){}",
                l.host,
                l.pid,
                l.address.as_deref().map(|a| format!(" at {a}")).unwrap_or_default()
            ),
            None => "this instance is not the active one".to_string(),
        };
        metrics::counter!("writeback_http_refused_total", "reason" => "standby").increment(1);
        let body = json!({"queued": false, "reason": why, "leader": leader});
        return (StatusCode::CONFLICT, Json(body)).into_response();
    }
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        SyncRequest { groups: Vec::new() }
    } else {
        match serde_json::from_slice::<SyncRequest>(&body) {
            Ok(r) => r,
            Err(e) => {
                drop(s);
                return refused(
                    StatusCode::BAD_REQUEST,
                    "body",
                    &format!("send {{\"groups\": [object ids]}}: {e}"),
                    None,
                );
            }
        }
    };
    let ids = match group_ids(&request.groups) {
        Ok(ids) => ids,
        Err(why) => {
            drop(s);
            return refused(StatusCode::BAD_REQUEST, "body", &why, None);
        }
    };
    let until_next = s.next_cycle.map(|n| n.saturating_duration_since(Instant::now()));
    if s.failures > 0 {
        let why = match &s.quarantined {
            Some(q) => format!("quarantined ({q}): the next attempt is at the end of the back-off"),
            None => "backing off after failed cycles: the next attempt is at the end of the back-off".to_string(),
        };
        return refused(StatusCode::SERVICE_UNAVAILABLE, "back-off", &why, until_next);
    }
    if !ids.is_empty() {
        let queued: std::collections::BTreeSet<&writeback_core::CloudId> = s.queued_groups.iter().chain(&ids).collect();
        if queued.len() > crate::daemon::MAX_QUEUED_GROUPS {
            return refused(StatusCode::TOO_MANY_REQUESTS, "queue", "too many groups are queued already", until_next);
        }
        s.queued_groups.extend(ids.iter().cloned());
        s.group_requests += 1;
        let request = s.group_requests;
        drop(s);
        d.groups_requested.notify_one();
        let body = json!({"queued": true, "request": request, "groups": ids.len(), "instance": d.instance});
        return (StatusCode::ACCEPTED, Json(body)).into_response();
    }
    if let Some(wait) = s.last_requested.map(|t| s.interval.saturating_sub(t.elapsed())).filter(|w| !w.is_zero()) {
        return refused(StatusCode::TOO_MANY_REQUESTS, "rate", "one requested cycle per interval", Some(wait));
    }
    s.last_requested = Some(Instant::now());
    drop(s);
    d.requested.notify_one();
    (StatusCode::ACCEPTED, Json(json!({"queued": true}))).into_response()
}

/// The groups of a request: object ids only (a name is resolved by `sync --group` before it
/// asks), at most [`MAX_GROUPS_PER_REQUEST`].
fn group_ids(given: &[String]) -> Result<Vec<writeback_core::CloudId>, String> {
    if given.len() > MAX_GROUPS_PER_REQUEST {
        return Err(format!("at most {MAX_GROUPS_PER_REQUEST} groups per request"));
    }
    given
        .iter()
        .map(|g| match writeback_core::naming::is_guid(g.trim()) {
            true => Ok(writeback_core::CloudId::new(g.trim())),
            false => Err("groups are given by object id".to_string()),
        })
        .collect()
}

async fn status_json(State(d): State<Arc<Daemon>>) -> Response {
    let (healthy, reason) = d.health();
    let s = d.status();
    Json(json!({
        "role": s.role, "healthy": healthy, "reason": reason, "failures": s.failures, "backoff": s.backoff_reason,
        "quarantined": s.quarantined, "running": s.running,
        "group_requests": {"instance": d.instance, "accepted": s.group_requests,
            "queued": s.queued_groups.len(),
            "done": s.groups_done.as_ref().map(|(n, _)| n), "last": s.groups_done.as_ref().map(|(_, r)| r)},
        "last_cycle": s.last_cycle.as_ref().map(|c| json!({"kind": c.kind, "status": c.status, "message": c.message,
            "at": c.at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)})),
    }))
    .into_response()
}

/// Runs the charts read at most: a day of cycles every 10 s.
const MAX_DAY_RUNS: usize = 9_000;

/// The status page, never inside another site's frame (its button must not be clicked through
/// one).
async fn page(State(d): State<Arc<Daemon>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut resp = page_html(d, q).await.into_response();
    let h = resp.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-ancestors 'none'"));
    resp
}

async fn page_html(d: Arc<Daemon>, q: HashMap<String, String>) -> Html<String> {
    let (healthy, reason) = d.health();
    let needle = q.get("group").map(|s| s.trim().to_string()).unwrap_or_default();
    let filter = Filter::from_query(&q);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |t| t.as_secs() as i64);
    // Copied out of the shared state (the cycle loop takes it too) before anything is read or
    // rendered: a group's line, not its members.
    let (live, rows) = {
        let s = d.status();
        let live = Live {
            target_ou: d.cfg().ad.target_ou.clone(),
            role: s.role,
            healthy,
            reason,
            running: s.running,
            last_success_ago: s.last_success.map(|(_, at)| at.elapsed().map_or(0, |e| e.as_secs())),
            quarantined: s.quarantined.clone(),
            threshold: s.threshold.clone(),
            backoff: s.backoff_reason.clone().filter(|_| s.failures > 0),
            lock_lost: s.lock_lost,
            guarded: s.guarded.clone(),
            interval: s.interval,
            propagation: s.propagation,
            now,
        };
        let rows: Vec<GroupRow> = s.reports.values().filter(|g| g.in_scope).map(GroupRow::of).collect();
        (live, rows)
    };
    let found = if needle.is_empty() { Vec::new() } else { found(&d, &needle) };
    // A group no cycle has planned yet (or one deleted) still has its trail.
    let trail_ids: Vec<String> = match (needle.is_empty(), found.is_empty()) {
        (true, _) => Vec::new(),
        (false, true) => vec![needle.clone()],
        (false, false) => found.iter().map(|g| g.cloud_id.to_string()).collect(),
    };
    let stored = match d.cfg().state() {
        Ok(target) => read_stored(&target, trail_ids, now).await,
        Err(e) => Stored::unreadable(e.to_string()),
    };
    Html(crate::page::render(&live, &stored, &rows, &filter, &needle, &found).into_string())
}

/// The runs, errors, stops, audit lines and instances the page shows, or why they cannot be
/// read.
async fn read_stored(target: &writeback_store::Target, trail_ids: Vec<String>, now: i64) -> Stored {
    let store = match writeback_store::Store::open_read_only(target).await {
        Ok(Some(s)) => s,
        Ok(None) => return Stored::unreadable_ok(),
        Err(e) => return Stored::unreadable(e.to_string()),
    };
    let read = async {
        let runs = store.runs(MAX_DAY_RUNS).await?;
        let recorded = Recorded { runs, errors: store.errors().await? };
        let who = (store.leaders().await?, store.instances(crate::status_cmd::INSTANCES_SEEN).await?);
        Ok::<_, writeback_store::StoreError>((recorded, store.stopped().await?, who))
    };
    let (recorded, stopped, (leaders, instances)) = match read.await {
        Ok((r, st, who)) => (Ok(r), st, who),
        Err(e) => (Err(e.to_string()), Stopped::default(), Default::default()),
    };
    let day = match &recorded {
        Ok(r) => {
            let since = now - crate::charts::DAY;
            r.runs.iter().filter(|run| run.run_id > 0 && started_after(run, since)).cloned().collect()
        }
        Err(_) => Vec::new(),
    };
    let mut trail = Vec::new();
    for id in trail_ids {
        let q = AuditQuery { group: Some(id.clone()), limit: MAX_CHANGES_SHOWN, ..AuditQuery::default() };
        trail.push((id, store.audit(&q).await.map_err(|e| e.to_string())));
    }
    store.close().await;
    Stored { recorded, day, stopped, trail, leaders, instances }
}

impl Stored {
    fn unreadable(why: String) -> Stored {
        Stored { recorded: Err(why), ..Stored::unreadable_ok() }
    }

    /// No state yet: nothing recorded.
    fn unreadable_ok() -> Stored {
        Stored {
            recorded: Ok(Recorded::default()),
            day: Vec::new(),
            stopped: Stopped::default(),
            trail: Vec::new(),
            leaders: Vec::new(),
            instances: Vec::new(),
        }
    }
}

/// Whether a run started after `since` (seconds since 1970); one whose time cannot be read is kept.
fn started_after(run: &RunRecord, since: i64) -> bool {
    crate::charts::unix(&run.started_at).is_none_or(|t| t + run.duration_ms / 1000 > since)
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

#[cfg(test)]
#[path = "web_tests.rs"]
mod tests;
