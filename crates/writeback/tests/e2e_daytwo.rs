//! Day two (issue #18): what an administrator does with writeback in production, through the
//! real binary: approving a run a threshold stopped while the daemon runs.

mod common;

use common::*;
use serde_json::Value;

/// Everything the daemons of this fixture logged.
fn daemon_logs(fx: &Fixture) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(&fx.dir).expect("dir").flatten() {
        if e.file_name().to_string_lossy().starts_with("daemon-") {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}

fn reason(h: &Value) -> &str {
    h["reason"].as_str().unwrap_or("")
}

#[test]
fn an_approval_lets_the_running_daemons_next_cycle_past_a_threshold_and_no_further() {
    let mut fx = Fixture::new("approve");
    let (_, uids, cloud) = fx.synced_users(1);
    let m = [uids[0].as_str()];
    let (keep, gone, gone2) = (fx.id(1), fx.id(2), fx.id(3));
    let all = vec![
        security_group(&keep, "SG-Keep", Some(true), &m),
        security_group(&gone, "SG-Gone", Some(true), &m),
        security_group(&gone2, "SG-Gone-2", Some(true), &m),
    ];
    fx.start_sim(&tenant(cloud.clone(), all.clone()));
    fx.write_config("delete_threshold = 1\n[daemon]\ninterval = \"1s\"\nfull_interval = \"1h\"\n");
    let mut d = Daemon::start(&fx);
    d.wait_for("the first cycle", |h| reason(h) == "ok");
    wait_until("the groups in AD", || [&keep, &gone, &gone2].iter().all(|g| fx.group(g).is_some()));

    // Two groups deleted for good in the cloud: over the threshold of one.
    fx.set_tenant(&tenant(cloud, vec![all[0].clone()]));
    let h = d.wait_for("stopped by the threshold", |h| reason(h).contains("writeback approve --deletes 2"));
    assert_eq!(h["healthy"], false, "{h}");
    let log = daemon_logs(&fx);
    let warn = log.lines().find(|l| l.contains("stopped by a threshold")).unwrap_or_else(|| panic!("no WARN: {log}"));
    assert!(
        warn.contains("WARN") && warn.contains("count=2") && warn.contains("writeback approve --deletes 2"),
        "{warn}"
    );

    // What an administrator tries first: a sync cannot run beside the daemon, and says what to do.
    let r = fx.writeback(&["sync", "--allow-deletes"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("writeback approve"), "{}", r.stderr);
    let shown = fx.writeback(&["approve"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.contains("approve: writeback approve --deletes 2"), "{}", shown.stdout);
    // status says it all at once, as Get-ADSyncScheduler would.
    let status = fx.writeback(&["status"]).stdout;
    assert!(status.starts_with("daemon: active (pid "), "{status}");
    assert!(status.contains("NOT healthy: stopped by a threshold"), "{status}");
    assert!(status.contains("last cycle: run ") && status.contains("stopped-delete-threshold"), "{status}");
    assert!(status.contains("to go ahead: writeback approve --deletes 2"), "{status}");
    let errors = fx.writeback(&["--json", "errors"]).json();
    assert_eq!(errors["run"]["status"], "stopped-delete-threshold", "{errors}");
    let stops = fx.writeback(&["--json", "history", "--status", "stopped-delete-threshold", "--limit", "1"]).json();
    assert_eq!(stops["runs"].as_array().map(Vec::len), Some(1), "{stops}");

    // Approved for fewer than the run needs: the next cycle still stops, and says so.
    let one = fx.writeback(&["approve", "--deletes", "1"]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert!(one.stdout.contains("approval #1: up to 1 group deletes"), "{}", one.stdout);
    let waiting = fx.writeback(&["status"]).stdout;
    assert!(waiting.contains("approval") || waiting.contains("and the 1 approved"), "{waiting}");
    d.wait_for("still stopped, past the approval", |h| reason(h).contains("and the 1 approved"));
    assert!(fx.group(&gone).is_some() && fx.group(&gone2).is_some(), "nothing deleted past the approval");

    // Approved as far as it goes: the daemon's next cycle deletes them, once.
    assert_eq!(fx.writeback(&["approve", "--deletes", "2"]).code, 0);
    wait_until("the two groups deleted", || fx.group(&gone).is_none() && fx.group(&gone2).is_none());
    d.wait_for("healthy again", |h| reason(h) == "ok");
    assert!(fx.group(&keep).is_some());
    let after = fx.writeback(&["--json", "approve"]).json();
    assert_eq!(after["open_approvals"], serde_json::json!([]), "used by one cycle, then gone: {after}");
    assert_eq!(after["stopped"]["blocked"], Value::Null, "{after}");
    let runs = fx.writeback(&["--json", "history"]).json();
    let used = runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["message"].as_str())
        .any(|m| m.contains("used approval #2 by") && m.contains("up to 2 group deletes"));
    assert!(used, "the run that used it says so: {runs}");
    assert_eq!(d.stop(), 0);
}

#[test]
fn the_audit_trail_says_who_was_removed_from_which_group_when_and_why() {
    let mut fx = Fixture::new("audit");
    let (users, uids, cloud) = fx.synced_users(2);
    let g = fx.id(1);
    let bob_name = users[1].dn.split(',').next().unwrap_or("").trim_start_matches("CN=").to_string();
    let mut t = tenant(cloud, vec![security_group(&g, "SG-Finance", Some(true), &[&uids[0], &uids[1]])]);
    fx.start_sim(&t);
    fx.write_config("");
    assert_eq!(fx.sync_json(&[]).0, 0);

    // Bob leaves the group in the cloud; a delta cycle removes him, with JSON logs.
    t["groups"][0]["members"] = serde_json::json!([&uids[0]]);
    fx.set_tenant(&t);
    let delta = fx.writeback(&["--log-format", "json", "-v", "--json", "sync"]);
    assert_eq!(delta.code, 0, "{}", delta.stderr);
    let run_id = delta.json()["run_id"].as_i64().expect("run id");
    assert_eq!(delta.json()["kind"], "delta");
    let lines: Vec<Value> = delta.stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty(), "JSON logs: {}", delta.stderr);
    let in_cycle = lines.iter().filter(|l| l["span"]["name"] == "cycle").count();
    assert!(in_cycle >= 2, "the cycle's lines are in its span: {}", delta.stderr);
    for l in lines.iter().filter(|l| l["span"]["name"] == "cycle") {
        assert_eq!(l["span"]["run_id"].as_i64(), Some(run_id), "{l}");
    }
    let finished = lines.iter().find(|l| l["fields"]["message"] == "cycle finished").expect("cycle finished");
    assert_eq!(
        (finished["fields"]["member_removes"].as_u64(), finished["fields"]["run_id"].as_i64()),
        (Some(1), Some(run_id))
    );

    // Who removed Bob from SG-Finance, when, and why.
    let log = fx.writeback(&["--json", "log", "--group", "sg-finance", "--member", &bob_name, "--since", "1h"]).json();
    let entries = log["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2, "added by the first sync, removed by the second: {log}");
    let removed = &entries[0];
    assert_eq!(removed["op"], "remove-member");
    assert_eq!(removed["run_id"].as_i64(), Some(run_id));
    assert_eq!(removed["why"], "removed in the cloud", "{removed}");
    assert_eq!(removed["member_id"], uids[1].to_lowercase());
    assert!(removed["member_dn"].as_str().is_some_and(|d| d.eq_ignore_ascii_case(&users[1].dn)), "{removed}");
    assert_eq!(removed["group_name"], "SG-Finance");
    assert_eq!(entries[1]["op"], "add-member");
    let all = fx.writeback(&["--json", "log"]).json();
    let ops: Vec<&str> = all["entries"].as_array().expect("e").iter().filter_map(|e| e["op"].as_str()).collect();
    assert_eq!(ops, vec!["remove-member", "add-member", "add-member", "add-group"], "{all}");
    let text = fx.writeback(&["log", "--group", &g]);
    assert!(text
        .stdout
        .lines()
        .next()
        .is_some_and(|l| l.contains("remove-member") && l.contains("removed in the cloud")));
    let later = fx.writeback(&["--json", "log", "--since", "2999-01-01"]).json();
    assert_eq!(later["entries"], serde_json::json!([]));
    assert_eq!(fx.writeback(&["log", "--since", "last tuesday"]).code, 2, "a bad --since is a usage error");

    // The status page's group view shows the same lines.
    let d = Daemon::start(&fx);
    let (_, page) = d.get(&format!("/?group={g}")).expect("page");
    assert!(page.contains("Recent changes in AD") && page.contains("remove-member"), "before any cycle: {page}");
    d.wait_for("a cycle", |h| reason(h) == "ok");
    let (_, page) = d.get(&format!("/?group={g}")).expect("page");
    assert!(page.contains("Recent changes in AD") && page.contains("remove-member"), "{page}");
    assert!(page.contains("removed in the cloud"));
}

#[test]
fn configuration_mistakes_are_found_before_any_network_and_named_with_their_fix() {
    let mut fx = Fixture::new("config");
    let (_, _, cloud) = fx.synced_users(1);
    fx.start_sim(&tenant(cloud, vec![]));
    let config = fx.write_config("");
    let good = std::fs::read_to_string(&config).expect("config");
    let bad = good
        .replace("ldaps://", "https://")
        .replace("target_ou = \"", "target_ou = \"Groups;")
        .replace("client_secret_file = \"client-secret\"", "client_secret_file = \"no-such-secret\"")
        + "\n[daemon]\ninterval = \"0s\"\n";
    std::fs::write(&config, bad).expect("write");
    let r = fx.writeback(&["--json", "check"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    for (key, fix) in [
        ("[ad] url", "must start with ldaps://"),
        ("[ad] target_ou", "OU=Groups,DC=corp,DC=example,DC=com"),
        ("[cloud] client_secret_file", "cannot be read by"),
        ("[daemon] interval", "longer than 0"),
    ] {
        assert!(error.lines().any(|l| l.contains(key) && l.contains(fix)), "{key}: {error}");
    }
    // Any command: the configuration is checked when it is read, before anything else.
    let status = fx.writeback(&["status"]);
    assert_eq!(status.code, 2);
    assert!(status.stderr.contains("[ad] url"), "{}", status.stderr);
    // Logs for machines carry the fatal error too, in their own form.
    let json = fx.writeback(&["--log-format", "json", "status"]);
    let line: Value = serde_json::from_str(json.stderr.lines().next().unwrap_or("")).expect("a JSON line");
    assert_eq!((line["level"].as_str(), line["fields"]["exit"].as_u64()), (Some("ERROR"), Some(2)), "{line}");
    assert!(line["fields"]["message"].as_str().is_some_and(|m| m.contains("[ad] url")), "{line}");
    let syslog = fx.writeback(&["--log-format", "syslog", "status"]);
    assert!(syslog.stderr.starts_with("<3>") && !syslog.stderr.contains('\u{1b}'), "{}", syslog.stderr);
}

/// The URLs the simulator served since the last call (sub-requests of `$batch` included).
fn served(fx: &Fixture) -> Vec<String> {
    let log = fx.sim_call("GET", "/_control/requests", None);
    fx.sim_call("DELETE", "/_control/requests", None);
    log.as_array().into_iter().flatten().filter_map(|e| e["url"].as_str().map(String::from)).collect()
}

#[test]
fn the_cli_answers_about_one_group_of_many_and_gates_a_pipeline() {
    let mut fx = Fixture::new("cli");
    let (_, uids, mut cloud) = fx.synced_users(2);
    let guest = fx.id(20_000);
    cloud.push(cloud_user(&guest));
    let m = [uids[0].as_str(), uids[1].as_str(), guest.as_str()];
    let mut groups: Vec<Value> =
        (1..=12).map(|n| security_group(&fx.id(n), &format!("SG-Team-{n:02}"), Some(true), &m[..1])).collect();
    let finance = fx.id(100);
    groups.push(security_group(&finance, "SG-Finance", Some(true), &m));
    fx.start_sim(&tenant(cloud.clone(), groups.clone()));
    fx.write_config("delete_threshold = 1");
    assert_eq!(fx.sync_json(&[]).0, 0);

    // show: by name in any case, reading that group's members and no other group's.
    served(&fx);
    let one = fx.writeback(&["--json", "show", "sg-FINANCE", "--members", "1"]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    let doc = one.json();
    assert_eq!((doc["display_name"].as_str(), doc["members"].as_array().map(Vec::len)), (Some("SG-Finance"), Some(1)));
    let member_reads: Vec<String> = served(&fx).into_iter().filter(|u| u.contains("/members")).collect();
    assert!(
        !member_reads.is_empty() && member_reads.iter().all(|u| u.contains(&finance)),
        "only SG-Finance's members are read: {member_reads:?}"
    );
    let skipped = fx.writeback(&["--json", "show", &finance, "--status", "skipped"]).json();
    assert_eq!(skipped["members"].as_array().map(Vec::len), Some(1), "the guest only: {skipped}");
    assert_eq!(skipped["members"][0]["reason"], "cloud-only");
    // A part of a name: the groups that have it.
    let near = fx.writeback(&["show", "team-0"]);
    assert_eq!(near.code, 1);
    assert!(near.stderr.contains("SG-Team-01") && near.stderr.contains("SG-Team-09"), "{}", near.stderr);
    assert!(!near.stderr.contains("SG-Team-10"), "{}", near.stderr);

    // plan: two groups deleted in the cloud, over the threshold of one: exit 3, for a pipeline.
    let kept: Vec<Value> = groups
        .iter()
        .filter(|g| g["displayName"] != "SG-Team-01" && g["displayName"] != "SG-Team-02")
        .cloned()
        .collect();
    fx.set_tenant(&tenant(cloud, kept));
    let summary = fx.writeback(&["plan", "--summary"]);
    assert_eq!(summary.code, 3, "{}", summary.stdout);
    assert!(
        summary.stdout.starts_with("plan: 0 added, 0 updated, 0 renamed, 0 moved, 2 deleted"),
        "{}",
        summary.stdout
    );
    assert!(summary.stdout.contains("writeback approve --deletes 2"), "{}", summary.stdout);
    assert_eq!(summary.stdout.lines().count(), 2, "the counts and the stop only: {}", summary.stdout);
    let full = fx.writeback(&["plan"]);
    assert!(full.stdout.lines().any(|l| l.starts_with("- delete   SG-Team-01  CN=")), "named: {}", full.stdout);
    let team = fx.writeback(&["--json", "plan", "--group", "sg-team-02"]);
    assert_eq!(team.code, 3);
    let ops = team.json()["operations"].as_array().cloned().unwrap_or_default();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(ops[0]["op"], "delete");
    // Approved: the plan says the sync goes ahead, as the next cycle would.
    assert_eq!(fx.writeback(&["approve", "--deletes", "2"]).code, 0);
    let approved = fx.writeback(&["plan", "--summary"]);
    assert_eq!(approved.code, 0, "{}", approved.stdout);
}

#[test]
fn the_common_network_mistakes_name_their_likely_cause() {
    let mut fx = Fixture::new("netmistakes");
    fx.start_sim(&tenant(vec![], vec![]));
    let config = fx.write_config("");
    let good = std::fs::read_to_string(&config).expect("config");
    // LDAPS to the DC's plain LDAP port.
    let url = good.lines().find_map(|l| l.strip_prefix("url = \"")).map(|u| u.trim_end_matches('"')).expect("url");
    let host = url.trim_start_matches("ldaps://").split(':').next().unwrap_or("127.0.0.1");
    std::fs::write(&config, good.replace(url, &format!("ldaps://{host}:389"))).expect("write");
    let r = fx.writeback(&["check"]);
    assert_eq!(r.code, 4, "{}", r.stdout);
    assert!(r.stdout.contains("is this a plain LDAP port (389)? Use ldaps://host (636)"), "{}", r.stdout);
    // Graph under a name that does not resolve (.invalid never does: RFC 6761).
    let sim = fx.sim_url();
    std::fs::write(&config, good.replace(sim, "https://graph.writeback-test.invalid")).expect("write");
    let r = fx.writeback(&["check"]);
    assert_eq!(r.code, 4, "{}", r.stdout);
    assert!(
        r.stdout.contains("the name does not resolve: check DNS") && r.stdout.contains("HTTPS_PROXY"),
        "{}",
        r.stdout
    );
}
