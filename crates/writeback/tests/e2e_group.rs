//! `sync --group` end to end (issue #22, part 1): one group now, by id or name, with its
//! members and nested groups, recorded as a run of kind `group`, leaving the delta cycles'
//! watermarks alone; with the daemon running, handed to it over `POST /sync`.

mod common;

use common::*;
use serde_json::{json, Value};

struct World {
    fx: Fixture,
    users: Vec<AdObj>,
    uids: Vec<String>,
    tenant: Value,
}

impl World {
    fn new(name: &str, config: &str) -> World {
        let mut fx = Fixture::new(name);
        let (users, uids, cloud) = fx.synced_users(5);
        let (a, b) = (fx.id(1), fx.id(2));
        let t = tenant(
            cloud,
            vec![
                security_group(&a, "SG-Alpha Team", Some(true), &[&uids[0]]),
                security_group(&b, "SG-Beta", Some(true), &[&uids[1]]),
            ],
        );
        fx.start_sim(&t);
        fx.write_config(config);
        World { fx, users, uids, tenant: t }
    }

    fn group(&mut self, id: &str) -> &mut Value {
        let groups = self.tenant["groups"].as_array_mut().expect("groups");
        groups.iter_mut().find(|g| g["id"] == id).expect("group in tenant")
    }

    fn add_member(&mut self, group: &str, member: &str) {
        self.group(group)["members"].as_array_mut().expect("members").push(json!(member));
        self.fx.set_tenant(&self.tenant);
    }

    fn has(&mut self, group: &str, user: usize) -> bool {
        let guid = self.users[user].guid.clone();
        self.fx.group(group).is_some_and(|g| g.members.contains(&guid))
    }

    fn last_run(&self) -> Value {
        let h = self.fx.writeback(&["--json", "history", "--limit", "1"]).json();
        h["runs"][0].clone()
    }
}

#[test]
fn one_group_now_by_name_or_id_leaves_the_rest_to_the_delta_cycles() {
    let mut w = World::new("group-now", "");
    let (a, b, c, d) = (w.fx.id(1), w.fx.id(2), w.fx.id(3), w.fx.id(4));
    let (code, out) = w.fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");

    // Changes to two groups, and two new groups (D nests C).
    let (u2, u3) = (w.uids[2].clone(), w.uids[3].clone());
    w.add_member(&a, &u2);
    w.add_member(&b, &u3);
    let groups = w.tenant["groups"].as_array_mut().expect("groups");
    groups.push(security_group(&c, "SG-Gamma", Some(true), &[&u3]));
    groups.push(security_group(&d, "SG-Delta", Some(true), &[&c]));
    w.fx.set_tenant(&w.tenant);

    // By display name, in another case: only that group changes.
    let (code, out) = w.fx.sync_json(&["--group", "sg-alpha team"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["kind"], "group");
    assert_eq!(out["member_adds"], 1, "{out}");
    assert!(w.has(&a, 2), "the named group has its new member");
    assert!(!w.has(&b, 3), "another group is left to the next cycle");
    assert!(w.fx.group(&c).is_none() && w.fx.group(&d).is_none(), "new groups are not created");
    assert_eq!(w.last_run()["kind"], "group");

    // By id, two at once: D nests C, written in the same run.
    let (code, out) = w.fx.sync_json(&["--group", &d, "--group", &c]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["adds"], 2, "{out}");
    let c_guid = w.fx.group(&c).expect("C in AD").guid;
    assert!(w.fx.group(&d).expect("D in AD").members.contains(&c_guid), "D nests C's AD group");

    // A name no group has: a usage error that names it and the groups that come close.
    let r = w.fx.writeback(&["sync", "--group", "SG-Al"]);
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("'SG-Al'") && r.stderr.contains("SG-Alpha Team"), "{}", r.stderr);
    // A name two groups have (anyone can make a group of that name): refused, with the ids.
    let twin = w.fx.id(9);
    let groups = w.tenant["groups"].as_array_mut().expect("groups");
    groups.push(security_group(&twin, "SG-Gamma", None, &[]));
    w.fx.set_tenant(&w.tenant);
    let r = w.fx.writeback(&["sync", "--group", "SG-Gamma"]);
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains(&twin) && r.stderr.contains(&c), "{}", r.stderr);

    // The delta links were not used up: the next sync is a delta that finds B's change.
    let (code, out) = w.fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["kind"], "delta", "{out}");
    assert!(w.has(&b, 3), "the delta cycle saw what the group runs left");
    let (code, out) = w.fx.sync_json(&[]);
    assert_eq!((code, out["member_adds"].clone(), out["adds"].clone()), (0, json!(0), json!(0)), "{out}");
}

#[test]
fn a_group_run_keeps_the_thresholds() {
    let mut w = World::new("group-threshold", "create_threshold = 1\n");
    let (a, c, d) = (w.fx.id(1), w.fx.id(3), w.fx.id(4));
    // The tenant's cycle stops (two creations): a group cycle does not go around the stop.
    let (code, out) = w.fx.sync_json(&[]);
    assert_eq!((code, out["status"].clone()), (3, json!("stopped-delete-threshold")), "{out}");
    let r = w.fx.writeback(&["sync", "--group", &a]);
    assert_eq!(r.code, 3, "{} {}", r.stdout, r.stderr);
    assert!(format!("{}{}", r.stdout, r.stderr).contains("does not go around it"), "{} {}", r.stdout, r.stderr);
    assert!(w.fx.group(&a).is_none(), "nothing written");
    let (code, out) = w.fx.sync_json(&["--allow-creates"]);
    assert_eq!(code, 0, "{out}");
    let u3 = w.uids[3].clone();
    let groups = w.tenant["groups"].as_array_mut().expect("groups");
    groups.push(security_group(&c, "SG-Gamma", Some(true), &[&u3]));
    groups.push(security_group(&d, "SG-Delta", Some(true), &[&u3]));
    w.fx.set_tenant(&w.tenant);
    // Two creations past create_threshold = 1: stopped before writing, as any cycle.
    let r = w.fx.writeback(&["--json", "sync", "--group", &c, "--group", &d]);
    assert_eq!(r.code, 3, "{} {}", r.stdout, r.stderr);
    assert_eq!(r.json()["status"], "stopped-delete-threshold");
    assert!(w.fx.group(&c).is_none() && w.fx.group(&d).is_none(), "nothing created");
    assert!(r.stderr.contains("--allow-creates"), "says how to go past: {}", r.stderr);
    // The tenant's stop record is the tenant cycles' own: a group run leaves it empty.
    let status = w.fx.writeback(&["--json", "status"]).json();
    assert!(status["stopped"]["blocked"].is_null(), "{status}");
    let (code, out) = w.fx.sync_json(&["--group", &c, "--group", &d, "--allow-creates"]);
    assert_eq!((code, out["adds"].clone()), (0, json!(2)), "{out}");
}

#[test]
fn with_the_daemon_running_the_group_is_handed_to_it() {
    let mut w = World::new("group-daemon", "[daemon]\ninterval = \"1h\"\nfull_interval = \"24h\"\n");
    let (a, b) = (w.fx.id(1), w.fx.id(2));
    let d = Daemon::start(&w.fx);
    d.wait_for("the first cycle", |h| h["role"] == "active" && h["reason"] == "ok");
    wait_until("A written", || w.fx.group(&a).is_some());

    let u2 = w.uids[2].clone();
    w.add_member(&a, &u2);
    let started = std::time::Instant::now();
    let r = w.fx.writeback(&["--json", "sync", "--group", "SG-Alpha Team"]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let out = r.json();
    assert_eq!((out["kind"].clone(), out["member_adds"].clone()), (json!("group"), json!(1)), "{out}");
    assert!(w.has(&a, 2), "the daemon wrote the member");
    // The daemon's interval is an hour: done now, not at its next cycle (a generous bound).
    assert!(started.elapsed().as_secs() < 120, "now, not at the next interval: {:?}", started.elapsed());
    assert_eq!(w.last_run()["kind"], "group");

    // What the page's button sends: its own origin, JSON, the group's id.
    let own = d.url.trim_start_matches("http://").to_string();
    let origin = d.url.clone();
    let u3 = w.uids[3].clone();
    w.add_member(&b, &u3);
    let body = serde_json::to_vec(&json!({"groups": [&b]})).expect("json");
    let headers = [("Host", own.as_str()), ("Content-Type", "application/json"), ("Origin", origin.as_str())];
    let (code, answer) = http_with(&d.url, "POST", "/sync", &headers, &body).expect("answers");
    assert_eq!(code, 202, "{answer}");
    wait_until("B's new member in AD", || w.has(&b, 3));
    // Another site's page cannot; names and junk are refused before anything is queued.
    let evil = [("Host", own.as_str()), ("Content-Type", "application/json"), ("Origin", "https://evil.example")];
    assert_eq!(http_with(&d.url, "POST", "/sync", &evil, &body).expect("answers").0, 403);
    for junk in [json!({"groups": ["SG-Beta"]}), json!({"groups": [&b], "also": 1}), json!({"groups": "x"})] {
        let body = serde_json::to_vec(&junk).expect("json");
        let (code, answer) = http_with(&d.url, "POST", "/sync", &headers, &body).expect("answers");
        assert_eq!(code, 400, "{junk}: {answer}");
    }
    let (_, page) = d.get(&format!("/?group={b}")).expect("page");
    assert!(page.contains(&format!("data-group=\"{b}\"")) && page.contains("Sync this group now"), "{page}");
}
