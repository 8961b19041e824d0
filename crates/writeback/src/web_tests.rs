//! The listener's handlers without a server: each request goes through the router (the guard
//! included) with tower's `oneshot`. The Chromium test (e2e_daemon) checks the page in a browser.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{header, Request, StatusCode};
use metrics_exporter_prometheus::PrometheusBuilder;
use tower::ServiceExt;
use writeback_core::plan::{GroupReport, MemberReport, MemberStatus, SkipReason};
use writeback_core::Secret;

use super::router;
use crate::access::Access;
use crate::config::Config;
use crate::daemon::{Daemon, Role};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A daemon listening on 127.0.0.1:8080, active, whose state is `state` (relative to a temp
/// directory of its own).
fn daemon(token: Option<&str>, state: &str) -> Arc<Daemon> {
    let dir = std::env::temp_dir().join(format!("writeback-web-{}-{state}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut cfg = Config::parse(crate::config::tests::MIN, dir).expect("config");
    cfg.state.path = state.into();
    let listen: SocketAddr = "127.0.0.1:8080".parse().expect("address");
    let access = Access::new(listen, &[], token.map(Secret::new));
    let metrics = PrometheusBuilder::new().build_recorder().handle();
    let d = Daemon::new(cfg, "writeback.toml".into(), Duration::from_secs(60), metrics, access);
    d.status().role = Role::Active;
    Arc::new(d)
}

fn get(path: &str) -> axum::http::request::Builder {
    Request::get(path).header(header::HOST, "127.0.0.1:8080")
}

fn post_json(origin: Option<&str>) -> Request<Body> {
    let mut r = Request::post("/sync").header(header::HOST, "127.0.0.1:8080");
    r = r.header(header::CONTENT_TYPE, "application/json");
    if let Some(o) = origin {
        r = r.header(header::ORIGIN, o);
    }
    r.body(Body::from("{}")).expect("request")
}

async fn send(d: &Arc<Daemon>, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = router(d.clone()).oneshot(req).await.expect("infallible");
    let (parts, body) = resp.into_parts();
    let bytes = to_bytes(body, 1 << 20).await.expect("body");
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn a_host_name_the_listener_does_not_know_is_refused() {
    let d = daemon(None, "a.db");
    let req = Request::get("/").header(header::HOST, "rebound.attacker.example").body(Body::empty());
    let (code, _, body) = send(&d, req.expect("request")).await;
    assert_eq!(code, StatusCode::MISDIRECTED_REQUEST);
    assert!(body.contains("allowed_hosts"), "{body}");
}

#[tokio::test]
async fn post_sync_is_refused_to_other_sites_and_to_forms_then_queued_once_per_interval() {
    let d = daemon(None, "b.db");
    let (code, _, _) = send(&d, post_json(Some("https://evil.example"))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let form = get("/sync")
        .method("POST")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("a=b"))
        .expect("request");
    assert_eq!(send(&d, form).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (code, _, body) = send(&d, post_json(Some("http://127.0.0.1:8080"))).await;
    assert_eq!((code, body.as_str()), (StatusCode::ACCEPTED, r#"{"queued":true}"#));
    let (code, headers, _) = send(&d, post_json(None)).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = headers[header::RETRY_AFTER].to_str().expect("text").parse().expect("seconds");
    assert!((59..=60).contains(&wait), "{wait}");
}

#[tokio::test]
async fn post_sync_never_shortens_a_back_off() {
    let d = daemon(None, "c.db");
    {
        let mut s = d.status();
        s.failures = 2;
        s.quarantined = Some("the DC's certificate is not trusted".into());
        s.next_cycle = Some(std::time::Instant::now() + Duration::from_secs(120));
    }
    let (code, headers, body) = send(&d, post_json(None)).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("quarantined"), "{body}");
    assert!(headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn with_a_token_everything_but_healthz_needs_it_and_healthz_keeps_its_reason() {
    let d = daemon(Some(TOKEN), "d.db");
    let (code, headers, _) = send(&d, get("/").body(Body::empty()).expect("request")).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(headers[header::WWW_AUTHENTICATE].to_str().expect("text").starts_with("Basic"));
    let wrong = get("/api/status").header(header::AUTHORIZATION, "Bearer 0123456789abcdef0123456789abcdee");
    assert_eq!(send(&d, wrong.body(Body::empty()).expect("request")).await.0, StatusCode::UNAUTHORIZED);

    let (code, _, body) = send(&d, get("/healthz").body(Body::empty()).expect("request")).await;
    assert_eq!(code, StatusCode::OK);
    let open: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(open, serde_json::json!({"healthy": true, "role": "active"}));
    let bearer = format!("Bearer {TOKEN}");
    let with = get("/healthz").header(header::AUTHORIZATION, bearer.as_str()).body(Body::empty());
    let (_, _, body) = send(&d, with.expect("request")).await;
    let told: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(told["reason"], "starting");
}

#[tokio::test]
async fn the_page_escapes_cloud_text_and_caps_the_member_rows() {
    let d = daemon(None, "e.db");
    let member = |n: usize| {
        Arc::new(MemberReport {
            via: None,
            cloud_id: format!("{n:05}").into(),
            display_name: Some("<img src=x onerror=alert(1)>".into()),
            kind: "user",
            status: MemberStatus::Skipped,
            reason: Some(SkipReason::NotFoundInAd),
            ad_guid: None,
        })
    };
    let report = GroupReport {
        cloud_id: "11111111-0000-0000-0000-000000000001".into(),
        display_name: "<script>alert(1)</script>".into(),
        in_scope: true,
        reason: "writeback enabled".into(),
        dn: None,
        group_type: None,
        action: "added".into(),
        members: (0..600).map(member).collect(),
    };
    d.status().reports.insert(report.cloud_id.clone(), report);
    let req = get("/?group=11111111-0000-0000-0000-000000000001").body(Body::empty()).expect("request");
    let (code, _, body) = send(&d, req).await;
    assert_eq!(code, StatusCode::OK);
    assert!(!body.contains("<script>alert") && !body.contains("<img src=x"), "cloud text reached the page raw");
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_eq!(body.matches("<tr class=\"member\"><td class=\"l\">skipped").count(), 500);
    assert!(body.contains("… and 100 more members"));
    assert!(body.contains("No runs yet."), "a state that does not exist yet has no runs");
}

#[tokio::test]
async fn a_state_that_cannot_be_read_is_said_on_the_page() {
    let d = daemon(None, "f.db");
    std::fs::write(d.cfg().state_path(), b"this is not an SQLite database, it is much longer than a header")
        .expect("write");
    let (code, _, body) = send(&d, get("/").body(Body::empty()).expect("request")).await;
    assert_eq!(code, StatusCode::OK);
    let _ = std::fs::remove_dir_all(d.cfg().state_path().parent().expect("a directory"));
    assert!(body.contains("The state cannot be read"), "{body}");
}

fn group(n: u32, name: &str) -> GroupReport {
    GroupReport {
        cloud_id: format!("22222222-0000-0000-0000-{n:012}").into(),
        display_name: name.into(),
        in_scope: true,
        reason: "writeback enabled".into(),
        dn: Some(format!("CN={name},OU=Groups,DC=corp,DC=example")),
        group_type: Some(-2147483640),
        action: "in sync".into(),
        members: Vec::new(),
    }
}

#[tokio::test]
async fn the_dashboard_lists_every_group_with_its_state_and_the_command_that_resolves_an_incident() {
    let d = daemon(None, "g.db");
    {
        let mut s = d.status();
        for (n, name) in [(1, "SG-Finance"), (2, "SG-Helpdesk"), (3, "<b>SG-Evil</b>")] {
            let g = group(n, name);
            s.reports.insert(g.cloud_id.clone(), g);
        }
        s.guarded = vec![writeback_core::Guarded {
            cloud_id: group(2, "").cloud_id,
            display_name: "SG-Helpdesk".into(),
            path: "nested into the protected group CN=Domain Admins".into(),
            held: 3,
        }];
        s.threshold = Some("12 groups would be deleted; delete_threshold is 10".into());
    }
    let (code, _, body) = send(&d, get("/").body(Body::empty()).expect("request")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("The Tier-0 guard holds back new members"), "{body}");
    assert!(body.contains("allow_protected_nesting and reload"), "the command that resolves it: {body}");
    assert!(body.contains("Stopped by a threshold") && body.contains("systemctl kill -s USR1 writeback"));
    assert!(body.contains("3 groups") && body.contains("1 held by the guard"), "{body}");
    assert!(!body.contains("<b>SG-Evil</b>") && body.contains("&lt;b&gt;SG-Evil&lt;/b&gt;"), "escaped");
    assert_eq!(body.matches("<svg").count(), 2, "two charts");
    assert!(body.contains("no cycles in the last 24 hours"));
    // The filter: by state, and by part of a name in any case.
    let (_, held) = {
        let (c, _, b) = send(&d, get("/?state=guard").body(Body::empty()).expect("request")).await;
        (c, b)
    };
    let table = |b: &str| b.split("id=\"groups\"").nth(1).map(|t| t.split("</table>").next().unwrap_or("").to_string());
    let rows = table(&held).expect("a table of groups");
    assert!(rows.contains("SG-Helpdesk") && !rows.contains("SG-Finance"), "{rows}");
    let (_, _, by_name) = send(&d, get("/?filter=finance").body(Body::empty()).expect("request")).await;
    let rows = table(&by_name).expect("a table of groups");
    assert!(rows.contains("SG-Finance") && !rows.contains("SG-Helpdesk"), "{rows}");
    let (_, _, none) = send(&d, get("/?filter=nothing-like-it").body(Body::empty()).expect("request")).await;
    assert!(none.contains("No group matches the filter."));
}
