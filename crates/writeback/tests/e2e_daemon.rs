//! The daemon end to end (issue #3): cycles, /healthz, /metrics, POST /sync, standby and
//! takeover, graceful stop, and the status page in headless Chromium.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

fn setup(name: &str) -> (Fixture, Vec<AdObj>, Vec<String>, Value) {
    let mut fx = Fixture::new(name);
    let (users, uids, cloud) = fx.synced_users(3);
    let g = fx.id(1);
    // One good group and one whose 300-character name is an error, for the status page.
    let t = tenant(
        cloud,
        vec![
            security_group(&g, "SG-Daemon", Some(true), &[&uids[0]]),
            security_group(&fx.id(2), &"x".repeat(300), Some(true), &[]),
        ],
    );
    fx.start_sim(&t);
    fx.write_config("[daemon]\ninterval = \"1s\"\nfull_interval = \"1h\"\n");
    (fx, users, uids, t)
}

#[test]
fn daemon_cycles_serves_health_and_metrics_and_hands_over_to_a_standby() {
    let (mut fx, users, uids, mut t) = setup("daemon");
    let g = fx.id(1);
    let mut a = Daemon::start(&fx);
    a.wait_for("active and healthy after a cycle", |h| h["role"] == "active" && h["reason"] == "ok");
    wait_until("a full cycle in the metrics", || {
        a.metric("writeback_cycles_total{kind=\"full\",status=\"completed-with-errors\"}").unwrap_or(0.0) >= 1.0
    });
    assert!(fx.group(&g).is_some(), "the daemon wrote the group");
    for name in [
        "writeback_graph_requests_total",
        "writeback_cycle_duration_seconds",
        "writeback_seconds_since_last_success",
        "writeback_groups_in_scope",
        "writeback_skipped_members{reason=\"cloud-only\"}",
        "writeback_operations_total{op=\"add\"}",
    ] {
        assert!(a.metric(name).is_some(), "/metrics has {name}");
    }
    assert_eq!(a.metric("writeback_groups_in_scope"), Some(2.0));

    // A second instance on the same state database waits as standby.
    let mut b = Daemon::start(&fx);
    let hb = b.wait_for("standby", |h| h["role"] == "standby");
    assert_eq!(hb["healthy"], true);
    let (code, _) = http_raw(&b.url, "POST", "/sync", None).expect("b answers");
    assert_eq!(code, 409, "a standby does not run cycles");

    // A change in the cloud reaches AD through the daemon, on demand.
    t["groups"][0]["members"] = json!([&uids[0], &uids[1]]);
    fx.set_tenant(&t);
    let (code, _) = http_raw(&a.url, "POST", "/sync", None).expect("a answers");
    assert_eq!(code, 202);
    wait_until("the new member in AD", || fx.group(&g).is_some_and(|x| x.members.contains(&users[1].guid)));

    // Stopping the active one lets the standby take over.
    assert_eq!(a.stop(), 0, "a graceful stop exits 0");
    b.wait_for("the standby takes over", |h| h["role"] == "active" && h["healthy"] == true);
    t["groups"][0]["members"] = json!([&uids[2]]);
    fx.set_tenant(&t);
    wait_until("b applies changes", || fx.group(&g).is_some_and(|x| x.members == vec![users[2].guid.clone()]));
    assert_eq!(b.stop(), 0);
}

#[test]
fn the_daemon_backs_off_and_says_why_when_graph_is_down() {
    let (fx, _, _, _) = setup("backoff");
    // Graph refuses the app from now on: every cycle fails.
    std::fs::write(fx.dir.join("client-secret"), "wrong").expect("write");
    let mut d = Daemon::start(&fx);
    let status = || {
        http_raw(&d.url, "GET", "/api/status", None)
            .map(|(_, b)| serde_json::from_str::<Value>(&b).unwrap_or(Value::Null))
            .unwrap_or(Value::Null)
    };
    wait_until("two failed cycles", || status()["failures"].as_u64().unwrap_or(0) >= 2);
    let s = status();
    assert!(s["backoff"].as_str().unwrap_or("").contains("AADSTS7000215"), "the reason is visible: {s}");
    assert!(
        s["quarantined"].as_str().unwrap_or("").contains("Graph authentication failed"),
        "bad credentials quarantine: {s}"
    );
    let (code, h) = d.health().expect("health");
    assert_eq!(code, 503, "quarantined is unhealthy: {h}");
    assert!(d.metric("writeback_quarantined").unwrap_or(0.0) >= 1.0);
    let (_, page) = d.get("/").expect("page");
    assert!(page.contains("Backing off"), "{page}");
    assert!(d.metric("writeback_cycles_total{kind=\"full\",status=\"failed\"}").unwrap_or(0.0) >= 2.0);
    assert_eq!(d.stop(), 0);
}

#[test]
fn the_status_page_shows_history_errors_and_one_group_in_chromium() {
    let (mut fx, _, _, _) = setup("page");
    let g = fx.id(1);
    let mut d = Daemon::start(&fx);
    d.wait_for("a cycle", |h| h["reason"] == "ok");
    wait_until("a full cycle", || d.metric("writeback_cycles_total{kind=\"full\"").is_some() || fx.group(&g).is_some());
    let (code, page) = d.get("/").expect("page");
    assert_eq!(code, 200);
    assert!(
        page.contains("Run history") && page.contains("Current errors") && page.contains("300 characters"),
        "{page}"
    );
    let (_, shown) = d.get(&format!("/?group={g}")).expect("page");
    assert!(shown.contains("SG-Daemon") && shown.contains("Members: 1 in the cloud, 1 written to AD"), "{shown}");
    assert!(!shown.contains("http://") && !shown.contains("https://"), "no external assets");

    // The same page as a person sees it: headless Chromium, DOM and a screenshot.
    let chromium =
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| std::path::Path::new(p).exists());
    let chromium = chromium.expect("Chromium is not installed: scripts/test installs Debian's chromium package");
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let profile = fx.dir.join("chromium-profile");
    let url = format!("{}/?group={g}", d.url);
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ];
    let dom = Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("Run history") && dom.contains("300 characters") && dom.contains("SG-Daemon"),
        "rendered DOM: {dom}"
    );
    let status = Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--window-size=1280,900")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .stderr(Stdio::null())
        .status()
        .expect("chromium runs");
    assert!(status.success());
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.len() > 5_000 && png.starts_with(b"\x89PNG"), "a real PNG: {} bytes", png.len());
    assert_eq!(d.stop(), 0);
}
