//! The daemon end to end (issue #3): cycles, /healthz, /metrics, POST /sync, standby and
//! takeover, graceful stop, and the status page in headless Chromium.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

fn setup(name: &str) -> (Fixture, Vec<AdObj>, Vec<String>, Value) {
    setup_with(name, "[daemon]\ninterval = \"1s\"\nfull_interval = \"1h\"\n")
}

fn setup_with(name: &str, config: &str) -> (Fixture, Vec<AdObj>, Vec<String>, Value) {
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
    fx.write_config(config);
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
    // Asking for a cycle does not cut the back-off short (a web page could lock the account out).
    wait_until("a back-off of 4 s or more", || status()["failures"].as_u64().unwrap_or(0) >= 3);
    let failures = status()["failures"].as_u64();
    for _ in 0..3 {
        let own = d.url.trim_start_matches("http://").to_string();
        let headers = [("Host", own.as_str()), ("Content-Type", "application/json")];
        let (code, head, body) = http_exchange(&d.url, "POST", "/sync", &headers, b"{}").expect("answers");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("quarantined") && head.to_ascii_lowercase().contains("retry-after:"), "{head}{body}");
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(status()["failures"].as_u64(), failures, "no attempt was made before the back-off ended");
    assert!(d.metric("writeback_quarantined").unwrap_or(0.0) >= 1.0);
    let (_, page) = d.get("/").expect("page");
    assert!(page.contains("Quarantined: writing to AD is stopped") && page.contains("writeback check"), "{page}");
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
    let chromium = chromium();
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let profile = fx.dir.join("chromium-profile");
    let url = format!("{}/?group={g}", d.url);
    let flags: Vec<&str> = CHROMIUM_FLAGS.into_iter().chain(["--hide-scrollbars"]).collect();
    let dom = Command::new(chromium)
        .args(&flags)
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
    // The dashboard: the written group with its state, and the day's cycles drawn as SVG.
    let groups = dom.split("id=\"groups\"").nth(1).unwrap_or_default();
    assert!(groups.contains("SG-Daemon") && groups.contains("in sync"), "the group list: {dom}");
    let duration = dom.split("id=\"chart-duration\"").nth(1).and_then(|c| c.split("</figure>").next());
    assert!(duration.is_some_and(|c| c.contains("<svg") && c.matches("<circle").count() >= 1), "{dom}");
    let status = Command::new(chromium)
        .args(&flags)
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

const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Debian's Chromium (headless: the status page as a person sees it, and an attacker's page).
fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Chromium is not installed: scripts/test installs Debian's chromium package")
}

/// Serves one HTML page on a port of its own (another origin than the daemon's), for ever.
fn serve_page(html: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let html = std::sync::Arc::new(html);
    std::thread::spawn(move || {
        // A thread per connection: Chromium opens sockets it sends nothing on (preconnects).
        for mut s in listener.incoming().flatten() {
            let html = html.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                if s.read(&mut buf).unwrap_or(0) == 0 {
                    return;
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: \
                        {}\r\nConnection: close\r\n\r\n{html}",
                    html.len()
                );
            });
        }
    });
    url
}

fn runs(fx: &Fixture) -> usize {
    fx.writeback(&["--json", "history"]).json()["runs"].as_array().map_or(0, Vec::len)
}

fn retry_after(head: &str) -> Option<u64> {
    head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after:").and_then(|v| v.trim().parse().ok()))
}

#[test]
fn the_listener_obeys_only_its_own_pages_and_host_names() {
    let (fx, _, _, mut t) = setup_with("listener", "[daemon]\ninterval = \"60s\"\nfull_interval = \"1h\"\n");
    // A group of 600 members, for the status page's cap.
    let big: Vec<String> = (0..600).map(|i| fx.id(20_000 + i)).collect();
    let users = t["users"].as_array_mut().expect("users");
    users.extend(big.iter().map(|id| cloud_user(id)));
    let refs: Vec<&str> = big.iter().map(String::as_str).collect();
    t["groups"].as_array_mut().expect("groups").push(security_group(&fx.id(3), "SG-Big", Some(true), &refs));
    fx.set_tenant(&t);
    let d = Daemon::start(&fx);
    d.wait_for("the first cycle", |h| h["reason"] == "ok");
    wait_until("the first run recorded", || runs(&fx) == 1);
    let port = d.url.rsplit(':').next().expect("port").to_string();

    // A name rebound to 127.0.0.1 reads nothing and runs nothing.
    let evil_host = format!("evil.example:{port}");
    for (method, path) in [("GET", "/?group=SG-Daemon"), ("GET", "/api/status"), ("POST", "/sync")] {
        let headers = [("Host", evil_host.as_str()), ("Content-Type", "application/json")];
        let (code, body) = http_with(&d.url, method, path, &headers, b"{}").expect("answers");
        assert_eq!(code, 421, "{method} {path}: {body}");
        assert!(!body.contains("SG-Daemon"), "{body}");
    }
    // Commands need JSON, from no browser or this listener's own page.
    let own = d.url.trim_start_matches("http://").to_string();
    let post = |headers: &[(&str, &str)]| http_exchange(&d.url, "POST", "/sync", headers, b"{}").expect("answers");
    let (code, _, _) =
        post(&[("Host", &own), ("Content-Type", "application/json"), ("Origin", "https://evil.example")]);
    assert_eq!(code, 403);
    let (code, _, _) = post(&[("Host", &own), ("Content-Type", "text/plain")]);
    assert_eq!(code, 415);

    // A real browser on another site's page tries a form POST and two fetches.
    let target = format!("{}/sync", d.url);
    let attack = format!(
        r#"<html><body><iframe name=sink></iframe>
<form id=f method=POST action="{target}" enctype="text/plain" target=sink><input name=a value=b></form>
<script>
fetch("{target}", {{method: "POST", mode: "no-cors", body: "x"}}).catch(() => {{}});
fetch("{target}", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: "{{}}"}}).catch(() => {{}});
setTimeout(() => document.getElementById("f").submit(), 500);
</script><p id=done>sent</p></body></html>"#
    );
    let page = serve_page(attack);
    let chromium = chromium();
    let refused_before = d.metric("writeback_http_refused_total{reason=\"origin\"}").unwrap_or(0.0);
    let out = Command::new("timeout")
        .args(["60", chromium])
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", fx.dir.join("attacker-profile").display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(&page)
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("<p id=\"done\">sent</p>"), "the attacker's page ran: {dom}");
    wait_until("the browser's requests reached the listener and were refused", || {
        d.metric("writeback_http_refused_total{reason=\"origin\"}").unwrap_or(0.0) > refused_before
    });
    assert_eq!(runs(&fx), 1, "no cycle was run for another site");

    // Its own JSON request runs one cycle; the next within the interval waits.
    let (code, _, _) = post(&[("Host", &own), ("Content-Type", "application/json")]);
    assert_eq!(code, 202);
    wait_until("the requested cycle", || runs(&fx) == 2);
    let (code, head, _) = post(&[("Host", &own), ("Content-Type", "application/json")]);
    assert_eq!(code, 429, "{head}");
    assert!(retry_after(&head).is_some_and(|s| s > 0 && s <= 60), "{head}");

    // The status page renders at most 500 members of a group and says how many more there are.
    let (_, shown) = d.get(&format!("/?group={}", fx.id(3))).expect("page");
    let rows = shown.matches("<tr class=\"member\">").count();
    assert_eq!(rows, 500, "500 member rows");
    assert!(shown.contains("… and 100 more members"), "{}", &shown[shown.len().saturating_sub(400)..]);
    assert_eq!(runs(&fx), 2);
}

#[test]
fn a_listener_beyond_loopback_needs_a_token() {
    let (fx, _, _, _) = setup("token");
    let port = free_port().to_string();
    let r = fx.writeback(&["run", "--listen", &format!("0.0.0.0:{port}")]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not a loopback address") && r.stderr.contains("token_file"), "{}", r.stderr);

    let token = "6f1c0d3e9a8b7c6d5e4f3a2b1c0d9e8f";
    std::fs::write(fx.dir.join("daemon-token"), format!("{token}\n")).expect("token");
    fx.edit_config(|c| {
        c.replace(
            "[daemon]\n",
            "[daemon]\ntoken_file = \"daemon-token\"\nallowed_hosts = [\"writeback.corp.example\"]\n",
        )
    });
    let d = Daemon::start_on(&fx, "0.0.0.0");
    let own = d.url.trim_start_matches("http://").to_string();
    let get = |path: &str, auth: Option<String>| {
        let mut headers = vec![("Host", own.clone())];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http_exchange(&d.url, "GET", path, &headers, b"").expect("answers")
    };
    let (code, _, health) = get("/healthz", None);
    assert_eq!(code, 200, "probes need no token");
    assert!(health.contains("\"healthy\"") && !health.contains("reason"), "the reason only with the token: {health}");
    assert!(get("/healthz", Some(format!("Bearer {token}"))).2.contains("reason"));
    for path in ["/", "/metrics", "/api/status"] {
        let (code, head, _) = get(path, None);
        assert_eq!(code, 401, "{path}");
        assert!(head.to_ascii_lowercase().contains("www-authenticate: basic"), "{head}");
        assert_eq!(get(path, Some("Bearer wrong-token-0000000000000".into())).0, 401, "{path}");
        assert_eq!(get(path, Some(format!("Bearer {token}"))).0, 200, "{path}");
    }
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{token}"));
    assert_eq!(get("/", Some(format!("Basic {basic}"))).0, 200, "a browser's login prompt works");
    // A configured name is answered; the token is still needed.
    let headers = [("Host", "writeback.corp.example"), ("Authorization", &format!("Bearer {token}") as &str)];
    assert_eq!(http_with(&d.url, "GET", "/api/status", &headers, b"").expect("answers").0, 200);
    let log = std::fs::read_to_string(fx.dir.join(format!("daemon-{}.log", d.url.rsplit(':').next().unwrap_or(""))))
        .unwrap_or_default();
    assert!(!log.contains(token), "the token is never logged");
}

/// The metric names an alert rule or the dashboard uses (`writeback_…`).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices("writeback_") {
        let name: String =
            text[i..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        // `job="writeback"` is a label value, not a metric.
        if name.len() > "writeback_".len() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn the_alert_rules_and_the_dashboard_use_only_metrics_the_daemon_exposes() {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/monitoring");
    // promtool validates the rules and runs their unit tests (each alert fires on its series).
    for args in [&["check", "rules", "alerts.yml"][..], &["test", "rules", "alerts_test.yml"][..]] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&docs)
            .output()
            .expect("promtool: scripts/test installs Debian's prometheus package");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = std::fs::read_to_string(docs.join("alerts.yml")).expect("alerts.yml");
    let dashboard = std::fs::read_to_string(docs.join("grafana-dashboard.json")).expect("dashboard");
    let parsed: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let panels = parsed["panels"].as_array().expect("panels");
    let mut ids = std::collections::BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().expect("a panel id")), "panel ids are unique");
        let (x, w) = (p["gridPos"]["x"].as_u64().unwrap_or(99), p["gridPos"]["w"].as_u64().unwrap_or(99));
        assert!(x + w <= 24, "{} fits the 24-column grid", p["title"]);
        let targets = p["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty() && targets.iter().all(|t| t["expr"].as_str().is_some_and(|e| e.contains("writeback_")))
        );
    }

    // A daemon whose secret's expiry is recorded, after two cycles that did their work (the
    // second measures propagation) and one refused request.
    let (fx, _, _, _) = setup("monitoring");
    let cfg_path = fx.dir.join("writeback.toml");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    let cfg = cfg.replace(
        "client_secret_file = \"client-secret\"",
        "client_secret_file = \"client-secret\"\nclient_secret_expires = \"2099-01-31\"",
    );
    std::fs::write(&cfg_path, cfg).expect("write");
    let mut d = Daemon::start(&fx);
    wait_until("two cycles", || d.metric("writeback_propagation_seconds").is_some());
    let forged = [("Host", "127.0.0.1"), ("Content-Type", "text/plain")];
    assert_eq!(http_with(&d.url, "POST", "/sync", &forged, b"x").map(|r| r.0), Some(415));
    let (_, exposed) = d.get("/metrics").expect("metrics");
    let exposed = metric_names(&exposed);
    for name in metric_names(&rules).into_iter().chain(metric_names(&dashboard)) {
        assert!(
            exposed.contains(&name),
            "{name} is used by docs/monitoring but /metrics has no such metric: {exposed:?}"
        );
    }
    let expiry = d.metric("writeback_credential_expiry_timestamp_seconds").expect("the recorded expiry");
    assert_eq!(expiry, 4_073_587_199.0, "2099-01-31 at the end of the day, UTC");
    assert_eq!(d.stop(), 0);
}

#[test]
fn sighup_reloads_a_good_configuration_keeps_the_running_one_otherwise_and_sigusr1_runs_a_cycle() {
    let (fx, _, _, _) = setup_with("reload", "[daemon]\ninterval = \"60s\"\nfull_interval = \"1h\"\n");
    let d = Daemon::start(&fx);
    d.wait_for("the first cycle", |h| h["reason"] == "ok");
    wait_until("the first cycle recorded", || runs(&fx) == 1);
    let log = || {
        let logs = std::fs::read_dir(&fx.dir).expect("dir").flatten().map(|e| e.path());
        let daemon_log = logs.filter(|p| p.to_string_lossy().contains("daemon-")).last().expect("the daemon's log");
        std::fs::read_to_string(daemon_log).unwrap_or_default()
    };
    let interval_s = || fx.writeback(&["--json", "status"]).json()["daemon"]["interval_s"].as_u64();
    assert_eq!(interval_s(), Some(60));

    // SIGUSR1: a cycle now, not in 60 s.
    d.signal("USR1");
    wait_until("a cycle on SIGUSR1", || runs(&fx) == 2);

    // A good file: the next cycle runs with it (the daemon publishes the new interval).
    let cfg_path = fx.dir.join("writeback.toml");
    let good = std::fs::read_to_string(&cfg_path).expect("config");
    std::fs::write(&cfg_path, good.replace("interval = \"60s\"", "interval = \"30s\"")).expect("write");
    d.signal("HUP");
    wait_until("reloaded", || log().contains("SIGHUP: configuration reloaded"));
    d.signal("USR1");
    wait_until("a cycle with the new configuration", || runs(&fx) == 3);
    wait_until("the new interval published", || interval_s() == Some(30));

    // A file with an error, then one that changes the listener: both kept out, and said why.
    std::fs::write(&cfg_path, good.replace("interval = \"60s\"", "interval = \"0s\"")).expect("write");
    d.signal("HUP");
    wait_until("the bad file refused", || log().contains("SIGHUP: the configuration has errors"));
    assert!(log().contains("must be longer than 0"), "the error says what is wrong: {}", log());
    let moved = good.replace("[daemon]\n", "[daemon]\nlisten = \"127.0.0.1:1\"\n");
    std::fs::write(&cfg_path, moved).expect("write");
    d.signal("HUP");
    wait_until("the restart-only change refused", || log().contains("apply only at a restart"));
    assert!(log().contains("[daemon] listen"), "{}", log());
    d.signal("USR1");
    wait_until("a cycle with the configuration kept", || runs(&fx) == 4);
    assert_eq!(interval_s(), Some(30), "the last good configuration is still in force");
    assert_eq!(d.health().map(|h| h.0), Some(200));
}
